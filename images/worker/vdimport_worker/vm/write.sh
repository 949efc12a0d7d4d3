# Write the image onto the attached volume: raw, no target creation (-n), the whole image
# range rewritten (a volume is not assumed to read as zeros), flushed.
# Where the device zeroes a range without moving data (write_zeroes_max_bytes > 0), one
# request zeroes the image's range first and qemu-img then skips the image's holes
# (--target-is-zero); elsewhere qemu-img zeroes the holes itself, hole by hole.
zeroed=no
if [ -b "$dev" ] && [ "$(cat "$queue/queue/write_zeroes_max_bytes" 2>/dev/null || echo 0)" -gt 0 ]; then
    ss=$(cat "$queue/queue/logical_block_size")
    if sudo blkdiscard -z -o 0 -l $(((VSIZE + ss - 1) / ss * ss)) "$dev"; then zeroed=yes; fi
fi
flags=(-n -W -m 8); [ "$zeroed" = no ] || flags+=(--target-is-zero)
n=$(slices | wc -l)
echo "writing $VSIZE bytes of $FORMAT onto $DEVICE ($n slices, direct I/O: $direct, zeroed ahead: $zeroed)"
convert() {
    local i off len pids=() rc=0
    while read -r i off len; do
        sudo qemu-img convert -p "${flags[@]}" "$(source_spec "$off" "$len")" "$(volume_spec "$off" "$len")" 2>&1 |
            awk -v s="$i" 'BEGIN { RS = "[\r\n]" } NF { print s, $0; fflush() }' &
        pids+=($!)
    done < <(slices)
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    return $rc
}
# Progress: the mean of the slices' percentages, every 10 %. Other lines are qemu-img's
# messages: printed, and the last one kept as the cause.
convert | awk -v n="$n" -v err="$WORK/write.err" 'BEGIN { next_p = 10; printf "" > err }
    /\/100%\)$/ { split($2, a, "[(/]"); p[$1] = a[2]; t = 0; for (s in p) t += p[s]; t = int(t / n)
                  if (t >= next_p) { printf "progress %d%%\n", t; next_p = t - t % 10 + 10 }; next }
    { sub(/^[0-9]+ /, ""); print; print > err }' ||
    fail "qemu-img convert failed: $(tail -n 1 "$WORK/write.err" | cut -c1-200)"
# Each qemu-img flushed its writes to the device as it closed (fdatasync). The device's page
# cache may still hold pages read before the write: dropped, for fsck's buffered reads. No
# global sync: it would wait for every dirty page, e.g. the image just downloaded to the slow
# boot volume.
[ ! -b "$dev" ] || sudo blockdev --flushbufs "$dev"
result "{\"device\":$(quote "$DEVICE"),\"volume_bytes\":$size,\"direct_io\":$direct,\"zeroed_ahead\":$([ "$zeroed" = yes ] && echo true || echo false)}"
