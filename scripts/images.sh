#!/usr/bin/env bash
# `make images`: build images/worker and images/function from their own Dockerfiles with podman.
#
# The Dockerfiles' base (python:3.11-slim-bookworm, pinned by digest) cannot be pulled on machines
# without a registry, so this builds a stand-in base from Debian's packages with debootstrap:
# bookworm with its python3 (3.11, the same minor as the pinned base), python3-venv and
# ca-certificates, imported as localhost/vdimport-python:3.11-bookworm-<hash of its inputs> and
# passed through the Dockerfiles' own PYTHON_IMAGE build argument. The Dockerfiles stay exactly
# what OCI DevOps builds. An existing base with the same hash is reused, so only a change of its
# inputs (this script's BASE_* lines) builds it again.
#
# RUN steps see this machine's CA bundle (a read-only build volume, never a layer): pip reaches
# PyPI through whatever TLS interception the machine's trust store accepts. Writes the images'
# sizes to bench/results/images.json.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
BASE_MIRROR=${VDIMPORT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TAG=${VDIMPORT_IMAGE_TAG:-dev}
# crun refuses this kernel's cgroups; runc works as root. Explicit limits: the defaults ask for
# more than the machine's hard limits allow.
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

say() { printf 'images: %s\n' "$*"; }

need() {
    local missing=()
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} (Debian's podman with runc as its runtime)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            podman runc debootstrap uidmap >/dev/null
    else
        say "needs ${missing[*]}: apt-get install podman runc debootstrap (as root)"
        exit 1
    fi
}

base_image() {
    local hash name rootfs
    hash=$(printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$(sed -n '/^base_image()/,/^}/p' "$0")" | sha256sum | cut -c1-12)
    name="localhost/vdimport-python:3.11-${BASE_SUITE}-${hash}"
    if "${PODMAN[@]}" image exists "$name"; then
        say "base $name (cached)" >&2
    else
        rootfs=$(mktemp -d /var/tmp/vdimport-base.XXXXXX)
        say "base: debootstrap $BASE_SUITE with $BASE_PACKAGES (a few minutes, once per change)" >&2
        debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$rootfs" "$BASE_MIRROR" >"$rootfs.log" 2>&1 || {
            tail -20 "$rootfs.log" >&2; rm -rf "$rootfs" "$rootfs.log"; exit 1
        }
        # what the official image's layers leave out too: apt's lists and caches, docs
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
        tar -C "$rootfs" -c . | "${PODMAN[@]}" import --change 'CMD ["python3"]' - "$name" >/dev/null
        rm -rf "$rootfs" "$rootfs.log"
        say "base $name built" >&2
    fi
    printf '%s\n' "$name"
}

build() {  # build <folder> <image name>
    local folder=$1 image=$2 log
    log=$(mktemp)
    say "building $image from images/$folder/Dockerfile"
    if ! "${PODMAN[@]}" build "${LIMITS[@]}" --pull=never \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --build-arg "PYTHON_IMAGE=$BASE" -t "$image" "images/$folder" >"$log" 2>&1; then
        tail -30 "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
}

need
BASE=$(base_image)
build worker "localhost/vdimport-worker:$TAG"
build function "localhost/vdimport-function:$TAG"

mkdir -p bench/results
"${PODMAN[@]}" image inspect "$BASE" "localhost/vdimport-worker:$TAG" "localhost/vdimport-function:$TAG" \
    --format '{{index .RepoTags 0}} {{.Size}}' | python3 -c '
import json, sys
sizes = {name: int(size) for name, size in (line.split() for line in sys.stdin)}
json.dump(sizes, open("bench/results/images.json", "w"), indent=1)
for name, size in sizes.items():
    print(f"images: {name:<60} {size / 1e6:7.0f} MB")
'
