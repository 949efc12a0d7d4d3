# Write the image onto the attached volume: raw, no target creation (-n), the whole
# image range rewritten (the volume is not assumed to read as zeros), flushed.
dev=$(readlink -f "$DEVICE")
if [ -b "$dev" ]; then
    size=$(sudo blockdev --getsize64 "$dev"); cache=none
else
    [ -f "$dev" ] || fail "the volume is not attached at $DEVICE"
    size=$(stat -c %s "$dev"); cache=writeback
fi
[ "$size" -ge "$VSIZE" ] || fail "the volume ($size bytes) is smaller than the image ($VSIZE bytes)"
echo "writing $VSIZE bytes of $FORMAT onto $DEVICE (cache=$cache)"
sudo qemu-img convert -p -f "$FORMAT" -O raw -n -t "$cache" -W -m 8 "$IMG" "$dev" 2>&1 |
    tr '\r' '\n' | awk -F'[(/]' '/\/100%/ { p = int($2); if (p >= next_p) { printf "progress %d%%\n", p; next_p = p - p % 10 + 10 } }' next_p=10
# qemu-img flushed the target as it closed it; sync only the target again: a global sync also
# waits for every other dirty page, e.g. the image just downloaded to the slow boot volume.
sudo sync "$dev"
[ -b "$dev" ] && sudo blockdev --flushbufs "$dev"
result "{\"device\":\"$DEVICE\",\"volume_bytes\":$size,\"cache\":\"$cache\"}"
