# Shared by write.sh and verify.sh: the image's virtual range cut into slices that run side by
# side. qemu-img converts on one thread, and decompressing a streamOptimized VMDK or a
# compressed qcow2 is CPU-bound: one slice per CPU, at most 4, each with at least 256 MiB of
# the image file to work on (a small image is not worth a second qemu-img), cut at 1 MiB
# boundaries of the virtual range (docs/performance.md).
dev=$(readlink -f "$DEVICE")
if [ -b "$dev" ]; then  # sizes from sysfs: no sudo (each costs ~15 ms)
    queue=/sys/class/block/${dev##*/}
    size=$(($(cat "$queue/size") * 512)); protocol=host_device; direct=on
else
    [ -f "$dev" ] || fail "the volume is not attached at $DEVICE"
    size=$(stat -c %s "$dev"); protocol=file; direct=off
fi
[ "$size" -ge "$VSIZE" ] || fail "the volume ($size bytes) is smaller than the image ($VSIZE bytes)"
slices() {
    local n i off=0 len
    local work
    n=$(nproc); [ "$n" -le 4 ] || n=4
    work=$(stat -L -c %s "$IMG")
    while [ "$n" -gt 1 ] && [ $((work / n)) -lt $((256 << 20)) ]; do n=$((n - 1)); done
    len=$((VSIZE / n >> 20 << 20))
    for ((i = 0; i < n; i++)); do
        [ "$i" -lt $((n - 1)) ] || len=$((VSIZE - off))
        echo "$i $off $len"; off=$((off + len))
    done
}
# --image-opts for one slice of the image and of the volume (commas in paths doubled). The
# volume is opened by several qemu-img at once, each on its own range: no image lock.
source_opts() { echo "driver=raw,offset=$1,size=$2,file.driver=$FORMAT,file.file.driver=file,file.file.filename=${IMG//,/,,}"; }
volume_opts() { echo "driver=raw,offset=$1,size=$2,file.driver=$protocol,file.filename=${dev//,/,,},file.locking=off,file.cache.direct=$direct"; }
