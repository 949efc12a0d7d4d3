# Shared by write.sh and verify.sh: the image's virtual range cut into slices that run side by
# side. qemu-img converts on one thread, and decompressing a streamOptimized VMDK or a
# compressed qcow2 is CPU-bound: one slice per CPU, at most 4, each with at least 256 MiB of
# the image file to work on (a small image is not worth a second qemu-img), cut at 1 MiB
# boundaries of the virtual range (docs/performance.md).
dev=$(readlink -f "$DEVICE")
if [ -b "$dev" ]; then  # sizes from sysfs: no sudo (each costs ~15 ms)
    queue=/sys/class/block/${dev##*/}
    size=$(($(cat "$queue/size") * 512)); protocol=host_device; direct=true
else
    [ -f "$dev" ] || fail "the volume is not attached at $DEVICE"
    size=$(stat -c %s "$dev"); protocol=file; direct=false
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
# json: specs of one slice of the image and of the volume. JSON rather than --image-opts: only
# JSON can say "backing": null, so qemu-img opens no backing file even if an image naming one
# got past the checks before. The volume is opened by several qemu-img at once, each on its own
# range: no image lock.
quote() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }
backing=""; case $FORMAT in qcow2 | vmdk) backing='"backing":null,' ;; esac
source_spec() {
    echo "json:{\"driver\":\"raw\",\"offset\":$1,\"size\":$2,\"file\":{\"driver\":\"$FORMAT\",$backing\"file\":{\"driver\":\"file\",\"filename\":$(quote "$IMG")}}}"
}
volume_spec() {
    echo "json:{\"driver\":\"raw\",\"offset\":$1,\"size\":$2,\"file\":{\"driver\":\"$protocol\",\"filename\":$(quote "$dev"),\"locking\":\"off\",\"cache\":{\"direct\":$direct}}}"
}
