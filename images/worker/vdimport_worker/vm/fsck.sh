# Check each partition's file system read-only; report one line per partition.
dev=$(readlink -f "$DEVICE")
sudo partx -u "$dev" >/dev/null 2>&1 || sudo partx -a "$dev" >/dev/null 2>&1 || true
command -v udevadm >/dev/null && sudo udevadm settle >/dev/null 2>&1 || true
table=$(sudo blkid -p -o value -s PTTYPE "$dev" 2>/dev/null | tr -cd 'a-z0-9_-') || true
# In partition order: lsblk lists them in the order partx added them, which can vary.
mapfile -t parts < <(lsblk -lnpo NAME,TYPE "$dev" 2>/dev/null | awk '$2 == "part" { print $1 }' | sort -V)
[ ${#parts[@]} -gt 0 ] || parts=("$dev")
entries=""
for p in "${parts[@]}"; do
    n=${p##*[!0-9]}; [ "$p" = "$dev" ] && n=0
    fs=$(sudo blkid -p -o value -s TYPE "$p" 2>/dev/null | tr -cd 'a-zA-Z0-9_-') || true
    rc=0
    case $fs in
    ext2 | ext3 | ext4) sudo e2fsck -fn "$p" >/dev/null 2>&1 || rc=$? ;;
    xfs) sudo xfs_repair -n "$p" >/dev/null 2>&1 || rc=$? ;;
    vfat) sudo fsck.vfat -n "$p" >/dev/null 2>&1 || rc=$? ;;
    *) rc=-1 ;;
    esac
    case $rc in -1) status=skipped ;; 0) status=clean ;; *) status=errors ;; esac
    echo "partition $n: ${fs:-none} $status"
    entries="$entries{\"number\":$n,\"fs\":\"${fs:-none}\",\"status\":\"$status\",\"rc\":$rc},"
done
result "{\"table\":\"${table:-none}\",\"partitions\":[${entries%,}]}"
