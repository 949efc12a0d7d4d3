#!/usr/bin/env bash
# Re-resolve the pinned locks from the *.in files (run after changing a dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv-uv/bin/uv}
"$UV" pip compile -q --generate-hashes --python-version 3.11 requirements.in -o requirements.lock
"$UV" pip compile -q --generate-hashes --python-version 3.11 tools/oci-cli/requirements.in -o tools/oci-cli/requirements.lock
"$UV" pip compile -q --generate-hashes --python-version 3.11 tools/checkov/requirements.in -o tools/checkov/requirements.lock
# The function image: its own lock, held to the versions of the main lock.
"$UV" pip compile -q --generate-hashes --python-version 3.11 -c requirements.lock images/function/requirements.in -o images/function/requirements.txt
echo "locks updated: requirements.lock tools/oci-cli/requirements.lock tools/checkov/requirements.lock images/function/requirements.txt"
echo "tools/hcl2json/package-lock.json, tools/playwright/package-lock.json: change the version in package.json there, then run npm install --package-lock-only"
