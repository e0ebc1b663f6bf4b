#!/usr/bin/env bash
# The SASS of a CUDA source file, with each instruction's source line and inlining chain, on a machine
# without a GPU: how large each kernel is and which call sites its instructions come from
# (scripts/sass_footprint.py reads the output; docs/logits.md, "Code footprint", says why it matters).
#
#   bash scripts/sass.sh [SOURCE.cu] [ARCH]     # default kernels/logits.cu, sm_90
#
# Writes build-sass/<name>.<arch>.cubin and build-sass/<name>.<arch>.sass (ignored by git) and prints
# each kernel's size. The toolkit here (CUDA 13.0, nvcc and ptxas only) has no disassembler, so the
# script takes nvdisasm from Debian's nvidia-cuda-toolkit 12.4 (trixie non-free), unpacked once into
# ${LMF_TOOLS_DIR:-$HOME/.cache/lmfuse-tools}/cuda-12.4. It reads CUDA 13's sm_90 cubins as they are.
# (Until 2026-11-28 it was bookworm's 11.8, which needed a patched ELF header and silently left out
# the instructions it could not decode: VIADD, about 4% of the combine kernel, so the counts of
# scripts/sass_path.py from before then are low by those.)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-kernels/logits.cu}
arch=${2:-sm_90}
tools=${LMF_TOOLS_DIR:-$HOME/.cache/lmfuse-tools}
nvdisasm=$tools/cuda-12.4/usr/bin/nvdisasm

if [ ! -x "$nvdisasm" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tools"
  cat > "$tmp/non-free.sources" << 'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # A private package list: the machine's own sources stay as they are.
  apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$tmp" -o "Dir::State::Lists=$tmp/lists")
  apt-get "${apt_opts[@]}" update > /dev/null
  (cd "$tmp" && apt-get "${apt_opts[@]}" download nvidia-cuda-toolkit > /dev/null 2>&1)
  dpkg -x "$tmp"/nvidia-cuda-toolkit_*.deb "$tmp/x"
  mkdir -p "$tools/cuda-12.4/usr/bin"
  cp "$tmp/x/usr/bin/nvdisasm" "$tools/cuda-12.4/usr/bin/"
fi

name=$(basename "$src" .cu)
mkdir -p build-sass
cubin=build-sass/$name.$arch.cubin
# The library's device flags (host/CMakeLists.txt), plus line info for the attribution.
nvcc -std=c++17 -O3 --fmad=false -lineinfo -arch="$arch" -cubin -Iinclude -I. -Ihost -Ikernels \
  "$src" -o "$cubin"

"$nvdisasm" -gi -c "$cubin" > "build-sass/$name.$arch.sass"

echo "build-sass/$name.$arch.sass; instructions per kernel (16 bytes each):"
readelf -SW "$cubin" 2> /dev/null | sed -n 's/^ *\[ *[0-9]*\] *\(\.text\.\)/\1/p' |
  while read -r sec _ _ _ size _; do printf '%8d  %s\n' $((16#$size / 16)) "${sec#.text.}"; done | sort -rn |
  if command -v c++filt > /dev/null; then c++filt; else cat; fi
