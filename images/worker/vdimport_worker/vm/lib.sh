# Shared by every worker script (prepended by remote.py). Values arrive as quoted variables.
set -euo pipefail
umask 077
export LC_ALL=C
fail() { printf 'VDIMPORT_ERROR %s\n' "$*"; exit 1; }
reject() { printf 'VDIMPORT_REJECT %s\n' "$*"; exit 1; }
result() { printf 'VDIMPORT_RESULT %s\n' "$1"; }
trap 'rc=$?; [ $rc -eq 0 ] || printf "VDIMPORT_ERROR worker script stopped at line %s (exit %s)\n" "$LINENO" "$rc"' ERR
WORK=/var/tmp/vdimport/$RUN
IMG=$WORK/image # an OVA's further disks: image-disk2, ...
[ "${DISK:-1}" -eq 1 ] || IMG=$WORK/image-disk$DISK
