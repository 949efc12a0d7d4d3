# Fetch the image's bytes through the read-only PAR (never printed: it is a credential),
# in parallel ranges written in place, then let qemu-img describe it with the format pinned.
stamp="$ETAG:$OFFSET:$LENGTH"
if [ -f "$WORK/image.ok" ] && [ "$(cat "$WORK/image.ok")" = "$stamp" ]; then
    echo "image already downloaded"
else
    rm -f "$IMG" "$WORK/image.ok"
    free=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
    [ "$free" -gt "$LENGTH" ] || fail "the worker has $free bytes free, the image needs $LENGTH"
    truncate -s "$LENGTH" "$IMG"
    part=$(( (LENGTH + STREAMS - 1) / STREAMS ))
    [ "$part" -ge 67108864 ] || part=67108864
    fetch() { # $1 start $2 end (inclusive, within the image)
        local try
        for try in 1 2 3 4 5; do
            if curl -sS --fail --connect-timeout 20 -H "If-Match: $ETAG" -r "$((OFFSET + $1))-$((OFFSET + $2))" "$URL" |
                dd of="$IMG" bs=4M seek="$1" oflag=seek_bytes conv=notrunc status=none; then
                return 0
            fi
            sleep "$try"
        done
        return 1
    }
    pids=()
    start=0
    while [ "$start" -lt "$LENGTH" ]; do
        end=$((start + part - 1)); [ "$end" -lt "$LENGTH" ] || end=$((LENGTH - 1))
        fetch "$start" "$end" & pids+=($!)
        start=$((end + 1))
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || fail "download failed: the object changed, the PAR expired, or Object Storage is unreachable"
    done
    got=$(stat -c %s "$IMG")
    [ "$got" -eq "$LENGTH" ] || fail "downloaded $got bytes, expected $LENGTH"
    if [ -n "$MD5" ]; then
        sum=$(openssl dgst -md5 -binary "$IMG" | openssl base64 -A)
        [ "$sum" = "$MD5" ] || fail "downloaded image does not match the object's MD5"
    fi
    echo "$stamp" > "$WORK/image.ok"
    echo "downloaded $LENGTH bytes in ${#pids[@]} streams"
fi
info=$(prlimit --as=1073741824 --cpu=30 qemu-img info -f "$FORMAT" --output=json "$IMG" 2>&1) ||
    fail "qemu-img cannot read the image as $FORMAT: $(printf '%s' "$info" | tail -1 | cut -c1-200)"
packed=$(printf '%s' "$info" | gzip -9 | base64 -w0)
[ "${#packed}" -lt 900 ] || fail "qemu-img info is unexpectedly large (${#packed} bytes packed): refusing the image"
result "{\"path\":\"$IMG\",\"info\":\"$packed\"}"
