# Is the worker ready: cloud-init done, the tools present, sudo usable, data volumes inert.
cloud-init status --wait >/dev/null 2>&1 || true
state=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p')
[ "$state" = "done" ] || fail "cloud-init ended with status ${state:-unknown} on the worker"
missing=""
for tool in qemu-img curl sfdisk blkid lsblk partx e2fsck xfs_repair fsck.vfat openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] || fail "tools missing on the worker:$missing"
sudo -n true 2>/dev/null || fail "the Run Command user cannot use sudo on the worker"
# Data volumes stay inert (cloud-init's files, steps/worker.py): checked before any is attached.
inert="data volumes are not inert on the worker:"
grep -qs '^ *event_activation = 0$' /etc/lvm/lvmlocal.conf || fail "$inert /etc/lvm/lvmlocal.conf does not turn LVM autoactivation off"
[ "$(awk '$1 == "AUTO" { print; exit }' /etc/mdadm.conf 2>/dev/null)" = "AUTO -all" ] ||
    fail "$inert /etc/mdadm.conf does not say AUTO -all"
grep -qs '^ENV{ID_FS_TYPE}=""$' /etc/udev/rules.d/61-vdimport-data-disks.rules ||
    fail "$inert the udev rule 61-vdimport-data-disks.rules is missing"
if command -v lvm >/dev/null 2>&1; then # what LVM itself reads, all files considered
    [ "$(sudo lvm config global/event_activation 2>/dev/null)" = event_activation=0 ] || fail "$inert LVM's event_activation is not 0"
    sudo lvm config devices/global_filter 2>/dev/null | grep -qF '"r|.*|"]' ||
        fail "$inert LVM's global_filter does not reject them"
    root=$(findmnt -nvo SOURCE /)
    [ ! -e /dev/oracleoci/oraclevda ] || [ "$(lsblk -ndo TYPE "$root" 2>/dev/null)" != lvm ] ||
        sudo lvm lvs "$root" >/dev/null 2>&1 || fail "LVM's global_filter hides the boot volume's volume group on the worker"
fi
sudo mkdir -p "$WORK" && sudo chown "$(id -u):$(id -g)" "$WORK"
version=$(qemu-img --version | sed -n '1s/^qemu-img version \([0-9.]*\).*/\1/p')
free=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
# The image's root file system is smaller than the boot volume launch_worker sized for the
# download: grow it as OCI documents (oci-growfs: partition, LVM and file system), then check.
need=${NEED:-0} # bytes to stage (wait_worker_ready)
if [ "$free" -le "$need" ] && [ -x /usr/libexec/oci-growfs ]; then
    echo "growing the root file system to the boot volume (oci-growfs)"
    sudo /usr/libexec/oci-growfs -y >/dev/null 2>&1 || fail "oci-growfs could not grow the worker's root file system"
    free=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
fi
[ "$free" -gt "$need" ] || fail "the worker has $free bytes free for the download, which needs $need: its root file system does not span the boot volume"
result "{\"qemu_img\":\"$version\",\"free_bytes\":$free}"
