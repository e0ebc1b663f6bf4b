#!/usr/bin/env bash
# Fetches the Debian packages a lent GPU machine lacks for the build (GoogleTest, cJSON, PCRE2) and unpacks
# them into .device/ (ignored by git), which scripts/gpu-check.sh uses as CMAKE_PREFIX_PATH there.
# Run here, then give the device tool `carry: [".device"]` with `bash scripts/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download libgtest-dev libgmock-dev libcjson-dev libcjson1 libpcre2-dev libpcre2-8-0)
rm -rf .device
mkdir -p .device
for f in "$tmp"/*.deb; do dpkg -x "$f" .device; done
echo "unpacked into .device/: $(ls "$tmp" | tr '\n' ' ')"
