#!/usr/bin/env bash
# Installs the Debian packages lmfuse builds and tests with, where missing (DESIGN.md: Dependencies).
# The CUDA toolkit (nvcc, cuBLAS, NCCL) is expected to be installed already; it is optional.
set -euo pipefail
pkgs=(cmake gcc g++ make pkgconf libgtest-dev libcjson-dev libpcre2-dev
      python3-torch python3-numpy python3-pytest python3-sklearn python3-regex)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
