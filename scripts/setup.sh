#!/usr/bin/env bash
# Create the development environment: Debian packages the tests need, .venv from the
# pinned lock, .venv-cli for the oci CLI (its pins conflict with Airflow's, so it lives
# apart), .venv-function, the function image's packages for local mode, .venv-checkov
# (checkov's pins conflict too), tools/hcl2json/node_modules, HashiCorp's HCL parser
# from npm for the Terraform tests, and tools/playwright/node_modules (playwright-core, which
# drives Debian's chromium through the Airflow UI in tests/ui). Idempotent: a second run with
# unchanged locks takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium (and a font for readable screenshots): the browser tests/ui drives with playwright-core.
APT_PACKAGES=(qemu-utils e2fsprogs xfsprogs dosfstools mtools fdisk parted util-linux mount curl sudo ca-certificates chromium fonts-liberation)
UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }

# Debian's own python3 needs python3-venv for `python3 -m venv`.
case "$(command -v "$PYTHON" 2>/dev/null)" in
/usr/bin/*) APT_PACKAGES+=(python3-venv) ;;
esac

# node and npm run HashiCorp's HCL parser (tools/hcl2json). Debian's nodejs 18 and npm do;
# a node found on PATH with its npm is used as it is (nodesource's nodejs package bundles npm
# and conflicts with Debian's npm package, so the commands are checked, not the packages).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    APT_PACKAGES+=(nodejs npm)
fi

missing_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$pkg"
    done
}

ensure_debian_packages() {
    command -v dpkg-query >/dev/null || { say "not a Debian/Ubuntu system: install qemu-img, e2fsprogs, xfsprogs, dosfstools, mtools, sfdisk, losetup, curl, node (18 or newer) and npm yourself"; return; }
    mapfile -t missing < <(missing_packages)
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]}"
        say "install them with: sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    # apt's chatter (debconf's "delaying package configuration" and the like) only when it fails
    local log
    log=$(apt-get update -qq 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1) || {
        printf '%s\n' "$log" >&2
        say "apt-get install failed: ${missing[*]}"
        exit 1
    }
}

check_python() {
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
        say "Python 3.11 or newer is needed as $PYTHON (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"
        exit 1
    }
}

# uv lives in a venv of its own: `uv pip sync` removes whatever its lock does not name,
# so a uv installed inside the venv it syncs would delete itself mid-setup.
UV=.venv-uv/bin/uv
ensure_uv() {
    if [ -x "$UV" ] && [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" = "$UV_VERSION" ]; then
        return
    fi
    "$PYTHON" -m venv .venv-uv || { say "python3 -m venv failed: install the python3-venv package"; exit 1; }
    .venv-uv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
}

# make_venv DIR LOCKFILE [editable-paths...]
make_venv() {
    local dir=$1 lock=$2; shift 2
    local stamp="$dir/.vdimport-setup"
    local want
    want=$({
        cat "$lock"
        for path in "$@"; do if [ -f "$path" ]; then cat "$path"; fi; done
    } | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dir/bin/python" ]; then
        return
    fi
    say "building $dir from $lock"
    if [ ! -x "$dir/bin/python" ]; then
        "$PYTHON" -m venv "$dir" || { say "python3 -m venv failed: install the python3-venv package"; exit 1; }
    fi
    # Bytecode now, not at first import: with PYTHONDONTWRITEBYTECODE set (as in some sandboxes)
    # every vdimport-step process would otherwise recompile the OCI SDK (~0.5 s per step).
    VIRTUAL_ENV="$dir" "$UV" pip sync -q --require-hashes --compile-bytecode "$lock"
    local path
    for path in "$@"; do
        [ -f "$path" ] || continue
        VIRTUAL_ENV="$dir" "$UV" pip install -q --no-deps -e "$(dirname "$path")"
    done
    echo "$want" > "$stamp"
}

# tools/NAME/node_modules from its package-lock.json (npm ci: exactly the locked versions and
# integrity hashes); afterwards the tool runs offline. The stamp holds the hash of both files.
# playwright-core never downloads a browser (it drives Debian's chromium): PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD.
ensure_node_tool() {
    local dir=tools/$1
    local stamp="$dir/node_modules/.vdimport-setup"
    local want
    want=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -lt 18 ]; then
        say "node 18 or newer is needed for $dir (found $(node --version 2>&1))"
        exit 1
    fi
    say "installing $dir/node_modules from $dir/package-lock.json"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want" > "$stamp"
}

ensure_debian_packages
check_python
ensure_uv
make_venv .venv requirements.lock local/pyproject.toml images/worker/pyproject.toml images/function/pyproject.toml
make_venv .venv-cli tools/oci-cli/requirements.lock
# The function runs locally with exactly its image's packages (no uvloop, unlike Airflow's venv).
make_venv .venv-function images/function/requirements.txt images/function/pyproject.toml
make_venv .venv-checkov tools/checkov/requirements.lock
ensure_node_tool hcl2json
ensure_node_tool playwright
say "ready: .venv ($(.venv/bin/python --version)), oci CLI $(.venv-cli/bin/oci --version), node $(node --version)"
