# Fetch the image via the PAR (a credential: never print it), then qemu-img info + check.
stamp="$ETAG:$OFFSET:$LENGTH"
[ -n "$URL" ] || URL=$(cat "$WORK/par-url" 2>/dev/null) || fail "the PAR URL was not handed over"
rm -f "$WORK/par-url"
if [ "$(cat "$IMG.ok" 2>/dev/null)" = "$stamp" ]; then
    echo "image already downloaded"
else
    rm -f "$IMG" "$IMG.ok"
    free=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
    [ "$free" -gt "$LENGTH" ] || fail "the worker has $free bytes free, the image needs $LENGTH"
    truncate -s "$LENGTH" "$IMG"
    # One part per stream, each >= 16 MiB (few requests for a small image); a 64 MiB floor left a
    # 300 MB object 5 of 8 streams under a per-connection cap (bench/download.py, 4.4x vs 7.8x).
    part=$(((LENGTH + STREAMS - 1) / STREAMS))
    [ $part -ge 16777216 ] || part=16777216
    fetch() { # start end
        for try in 1 2 3 4 5; do
            curl -sS --fail --path-as-is --connect-timeout 20 -H "If-Match: $ETAG" -r $((OFFSET + $1))-$((OFFSET + $2)) "$URL" |
                dd of="$IMG" bs=4M seek=$1 oflag=seek_bytes conv=notrunc status=none && return 0
            sleep $try
        done
        return 1
    }
    pids=()
    for ((start = 0; start < LENGTH; start += part)); do
        end=$((start + part - 1)); [ $end -lt $LENGTH ] || end=$((LENGTH - 1))
        fetch $start $end & pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait $pid || fail "download failed: the object changed, the PAR expired, or Object Storage is unreachable"
    done
    got=$(stat -c %s "$IMG")
    [ $got -eq $LENGTH ] || fail "downloaded $got bytes, expected $LENGTH"
    [ -z "$MD5" ] || [ "$(openssl dgst -md5 -binary "$IMG" | openssl base64 -A)" = "$MD5" ] ||
        fail "downloaded image does not match the object's MD5"
    # An OVA's manifest digest of this disk (ovatar.py): the pod could not hash the whole disk.
    if [ -n "$DIGEST" ]; then
        algo=${DIGEST%%:*}
        case $algo in sha1 | sha256 | sha512) ;; *) fail "unknown manifest digest algorithm" ;; esac
        [ "$("${algo}sum" "$IMG" | cut -d' ' -f1)" = "${DIGEST#*:}" ] ||
            reject "the disk does not match the OVA's manifest ($algo): the archive was altered or damaged after export"
    fi
    echo "$stamp" > "$IMG.ok"
    echo "downloaded $LENGTH bytes in ${#pids[@]} streams"
fi
why() { { grep -iEm1 'truncat|end of (the )?file|EOF' <<<"$1" || tail -1 <<<"$1"; } | cut -c1-200; }
info=$(prlimit --as=1073741824 --cpu=30 qemu-img info -f "$FORMAT" --output=json "$IMG" 2>&1) ||
    reject "qemu-img cannot read the image as $FORMAT: $(why "$info")"
# Missing clusters read as zeros: catch truncation (rc 3 = leaks only); skip images naming files.
case $FORMAT:$info in
*'"backing-filename"'* | *'"data-file"'*) ;;
*'"encrypted": true'*) reject "the $FORMAT image is encrypted; decrypt it before importing" ;;
qcow2:* | vmdk:* | vhdx:* | vdi:*)
    out=$(prlimit --as=2147483648 --cpu=300 qemu-img check -f "$FORMAT" "$IMG" 2>&1) && rc=0 || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] || reject "the $FORMAT image is damaged or truncated (qemu-img check): $(why "$out")" ;;
esac
# Packed to one line. Many internal snapshots make it outgrow Run Command's 1 KB of text: its
# output then goes to Object Storage (remote.LARGE_RESULTS); 1 MiB bounds what a step reads.
packed=$(printf '%s' "$info" | gzip -9 | base64 -w0)
[ ${#packed} -lt 1048576 ] || reject "qemu-img info is unexpectedly large (${#packed} bytes packed): refusing the image"
result "{\"path\":\"$IMG\",\"info\":\"$packed\"}"
