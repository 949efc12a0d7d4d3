# Is the worker ready: cloud-init done, the tools present, sudo usable.
cloud-init status --wait >/dev/null 2>&1 || true
state=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p')
[ "$state" = done ] || fail "cloud-init ended with status ${state:-unknown} on the worker"
missing=""
for tool in qemu-img curl sfdisk blkid lsblk partx e2fsck xfs_repair fsck.vfat openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] || fail "tools missing on the worker:$missing"
sudo -n true 2>/dev/null || fail "the Run Command user cannot use sudo on the worker"
sudo mkdir -p "$WORK" && sudo chown "$(id -u):$(id -g)" "$WORK"
version=$(qemu-img --version | sed -n '1s/^qemu-img version \([0-9.]*\).*/\1/p')
free=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
result "{\"qemu_img\":\"$version\",\"free_bytes\":$free}"
