# Compare the volume with the source image over the image's virtual size.
dev=$(readlink -f "$DEVICE")
driver=file; [ -b "$dev" ] && driver=host_device
out=$(sudo qemu-img compare --image-opts \
    "driver=$FORMAT,file.driver=file,file.filename=$IMG" \
    "driver=raw,size=$VSIZE,file.driver=$driver,file.filename=$dev" 2>&1) && rc=0 || rc=$?
msg=$(printf '%s' "$out" | tail -1 | cut -c1-200)
case $rc in
0) result "{\"identical\":true}" ;;
1) fail "the volume differs from the image: $msg" ;;
*) fail "qemu-img compare failed: $msg" ;;
esac
