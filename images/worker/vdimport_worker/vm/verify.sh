# Compare the volume with the source image over the image's virtual size, slice by slice side
# by side, reading the volume with direct I/O: what is on the device, not what the page cache
# kept of the write.
pids=()
while read -r i off len; do
    sudo qemu-img compare "$(source_spec "$off" "$len")" "$(volume_spec "$off" "$len")" > "$WORK/verify.$i" 2>&1 &
    pids+=("$i:$off:$!")
done < <(slices)
differs="" broken=""
for entry in "${pids[@]}"; do
    IFS=: read -r i off pid <<< "$entry"
    wait "$pid" && rc=0 || rc=$?
    msg=$(tail -n 1 "$WORK/verify.$i" | cut -c1-200)
    at=$(sed -n 's/^Content mismatch at offset \([0-9]*\)!$/\1/p' <<< "$msg")
    case $rc in
    0) ;;
    1) [ -n "$differs" ] || differs="the volume differs from the image at byte $((off + ${at:-0}))" ;;
    *) [ -n "$broken" ] || broken="qemu-img compare failed: $msg" ;;
    esac
done
[ -z "$differs" ] || fail "$differs"
[ -z "$broken" ] || fail "$broken"
result "{\"identical\":true}"
