# Keep a value too long for a script's text (a PAR URL) in a private file for the next script.
mkdir -p "$WORK"
printf '%s' "$VALUE" > "$WORK/$NAME"
chmod 600 "$WORK/$NAME"
result "{\"stored\":\"$NAME\"}"
