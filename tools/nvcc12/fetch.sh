#!/usr/bin/env bash
# Fetches a CUDA 12 compiler that can build the Hopper (sm_90a: wgmma, TMA, setmaxnreg) kernels on
# a Debian bookworm machine, whose own nvidia-cuda-toolkit (nvcc 11.8) cannot. It takes Debian
# trixie's nvidia-cuda-toolkit and nvidia-cuda-dev packages (nvcc 12.4) through a private apt
# configuration (the system's sources and package state are not touched), unpacks only the
# compiler, its tools and the CUDA headers (~210 MB of the ~1 GB download) into DEST, points
# nvcc.profile there, and checks the result by compiling a kernel for sm_90a.
#
#   tools/nvcc12/fetch.sh [DEST]      DEST defaults to .toolchain/cuda (git-ignored)
#
# ./build.sh uses DEST/nvcc when it exists (after $NVCC). Exit 0: DEST/nvcc works (fetched now or
# already there); 1: it could not be fetched or does not work (the reason is printed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.toolchain/cuda}"
SUITE="${NVCC12_SUITE:-trixie}"

check() {  # check NVCC -> 0 when it compiles an sm_90a kernel
  local probe; probe="$(mktemp -d)"
  printf '__global__ void dk_probe(float* p) { p[threadIdx.x] = 1.0f; }\n' > "$probe/probe.cu"
  "$1" -gencode=arch=compute_90a,code=sm_90a -c "$probe/probe.cu" -o "$probe/probe.o" >"$probe/log" 2>&1 \
    || { cat "$probe/log" >&2; rm -rf "$probe"; return 1; }
  rm -rf "$probe"
}

if [[ -x "$DEST/nvcc" ]] && check "$DEST/nvcc" 2>/dev/null; then
  echo "[nvcc12] $DEST/nvcc is there: $("$DEST/nvcc" --version | grep -o 'release [0-9.]*')"
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || { echo "[nvcc12] needs apt-get and dpkg-deb (Debian)" >&2; exit 1; }

WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/archives/partial" "$WORK/sources" "$WORK/debs"
cat > "$WORK/sources/$SUITE.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
APT=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$WORK/sources" -o Dir::State::Lists="$WORK/lists"
     -o Dir::Cache::Archives="$WORK/archives" -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o APT::Sandbox::User=root
     -o Debug::NoLocking=1)
echo "[nvcc12] reading Debian $SUITE's package lists"
apt-get "${APT[@]}" update -q >"$WORK/apt.log" 2>&1 || { tail -n 20 "$WORK/apt.log" >&2; echo "[nvcc12] apt-get update for $SUITE failed" >&2; exit 1; }
echo "[nvcc12] downloading nvidia-cuda-toolkit and nvidia-cuda-dev (~1 GB)"
(cd "$WORK/debs" && apt-get "${APT[@]}" download nvidia-cuda-toolkit nvidia-cuda-dev >>"$WORK/apt.log" 2>&1) \
  || { tail -n 20 "$WORK/apt.log" >&2; echo "[nvcc12] download failed" >&2; exit 1; }

echo "[nvcc12] unpacking the compiler and headers into $DEST"
rm -rf "$DEST.partial"; mkdir -p "$DEST.partial/root"
dpkg-deb --fsys-tarfile "$WORK"/debs/nvidia-cuda-dev_*.deb | tar -x -C "$DEST.partial/root" ./usr/include
dpkg-deb --fsys-tarfile "$WORK"/debs/nvidia-cuda-toolkit_*.deb | tar -x -C "$DEST.partial/root" ./usr/bin ./usr/lib/nvidia-cuda-toolkit
rm -rf "$DEST"; mv "$DEST.partial" "$DEST"

# Debian's nvcc.profile names /usr/lib/nvidia-cuda-toolkit; point it (and the headers) at DEST.
R="$DEST/root"
PROFILE="$R/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile"
sed -i "s#/usr/lib/nvidia-cuda-toolkit#$R/usr/lib/nvidia-cuda-toolkit#g; s#^PATH\([^=]*\)+= *\(.*\)#PATH\1+= \2$R/usr/bin:#" "$PROFILE"
printf 'INCLUDES += "-I%s/usr/include" $(_SPACE_)\n' "$R" >> "$PROFILE"
cat > "$DEST/nvcc" <<WRAPPER
#!/bin/sh
# nvcc $(dpkg-deb -f "$WORK"/debs/nvidia-cuda-toolkit_*.deb Version) from Debian $SUITE, unpacked by tools/nvcc12/fetch.sh.
export PATH="$R/usr/lib/nvidia-cuda-toolkit/bin:$R/usr/bin:\$PATH"
exec "$R/usr/lib/nvidia-cuda-toolkit/bin/nvcc" "\$@"
WRAPPER
chmod +x "$DEST/nvcc"
for tool in cuobjdump nvdisasm ptxas; do ln -sf "$R/usr/bin/$tool" "$DEST/$tool"; done
check "$DEST/nvcc" || { echo "[nvcc12] $DEST/nvcc does not compile for sm_90a" >&2; exit 1; }
echo "[nvcc12] ready: $DEST/nvcc ($("$DEST/nvcc" --version | grep -o 'release [0-9.]*'), sm_90a checked)"
