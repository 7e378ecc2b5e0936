#!/usr/bin/env bash
# Writes the GPU verification bundle: everything a Linux GPU host without .NET and without network
# needs to build the kernels for its GPU, run the CUDA tests and the benchmarks, and write a report.
#
#   tools/gpu-bundle/make-bundle.sh [OUTDIR] [--fast]      (normally via ./build.sh gpu-bundle)
#
# OUTDIR defaults to build/gpu-bundle (git-ignored). The managed build must exist (build.sh builds
# first). Contents:
#   verify.sh, peers.py, report.py,    the scripts run on the GPU host
#   coverage.py
#   runtime.tar.xz                     dotnet host + hostfxr + Microsoft.NETCore.App (no SDK)
#   app.tar.xz                         the built test output (library, CLI, tests and their deps)
#                                      + vstest/ : the SDK's vstest.console, which runs on a bare runtime
#   src.tar.xz                         native/ and cmake/ (the kernels and their CMake build)
#   manifest.json                      versions, commit, sizes
# Tests run through vstest.console taken from the local SDK: NUnitLite is not served by our package
# mirror, and NUnit.ConsoleRunner (3.x) predates NUnit 5; vstest.console + NUnit3TestAdapter (already
# in the test output) is the same engine `dotnet test` uses, so the CUDA category runs unchanged.
# --fast compresses with gzip -1 instead of xz (for the CI test; larger, not for shipping).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG="${CONFIG:-Release}"
OUT=""
FAST=0
LIMIT_MIB=60
for arg in "$@"; do
  case "$arg" in
    --fast) FAST=1 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "make-bundle.sh: unknown option '$arg'" >&2; exit 2 ;;
    *) if [[ -n "$OUT" ]]; then echo "make-bundle.sh: more than one output directory given" >&2; exit 2; fi; OUT="$arg" ;;
  esac
done
OUT="${OUT:-$ROOT/build/gpu-bundle}"
APP="$ROOT/tests/DeepKernels.Tests/bin/$CONFIG/net10.0"
[[ -f "$APP/DeepKernels.Tests.dll" && -f "$APP/DeepKernels.Cli.dll" ]] || {
  echo "make-bundle.sh: no managed build in $APP (run ./build.sh build first)" >&2; exit 1; }

DOTNET="$(readlink -f "$(command -v dotnet)")"
DOTNET_HOME="$(dirname "$DOTNET")"
RUNTIME_VERSION="$(dotnet --list-runtimes | awk '$1=="Microsoft.NETCore.App" && $2 ~ /^10\./ {v=$2} END {print v}')"
[[ -n "$RUNTIME_VERSION" ]] || { echo "make-bundle.sh: no Microsoft.NETCore.App 10.x runtime found" >&2; exit 1; }
SDK_DIR="$(dotnet --list-sdks | awk '$1 ~ /^10\./ {v=$1; d=$2} END {gsub(/[\[\]]/, "", d); print d "/" v}')"
[[ -f "$SDK_DIR/vstest.console.dll" ]] || { echo "make-bundle.sh: vstest.console.dll not found in the .NET SDK ($SDK_DIR)" >&2; exit 1; }

if [[ $FAST == 1 ]]; then EXT=tar.gz; COMPRESS=(gzip -1); else EXT=tar.xz; COMPRESS=(xz -T0 -6); fi
compress() { "${COMPRESS[@]}"; }

rm -rf "$OUT"; mkdir -p "$OUT"
STAGE="$(mktemp -d)"; trap 'rm -rf "$STAGE"' EXIT
echo "[bundle] staging runtime $RUNTIME_VERSION from $DOTNET_HOME"

# Runtime: compressed once per runtime version and mode, then reused (it is the slow part).
CACHE="$ROOT/build/gpu-bundle-cache"; mkdir -p "$CACHE"
RUNTIME_ARCHIVE="$CACHE/runtime-$RUNTIME_VERSION.$EXT"
if [[ ! -f "$RUNTIME_ARCHIVE" ]]; then
  mkdir -p "$STAGE/dotnet/shared/Microsoft.NETCore.App" "$STAGE/dotnet/host"
  cp "$DOTNET" "$STAGE/dotnet/dotnet"
  cp -r "$DOTNET_HOME/host/fxr" "$STAGE/dotnet/host/"
  cp -r "$DOTNET_HOME/shared/Microsoft.NETCore.App/$RUNTIME_VERSION" "$STAGE/dotnet/shared/Microsoft.NETCore.App/"
  cp "$DOTNET_HOME/LICENSE.txt" "$DOTNET_HOME/ThirdPartyNotices.txt" "$STAGE/dotnet/" 2>/dev/null || true
  echo "[bundle] compressing the runtime (once per version; cached in build/gpu-bundle-cache)"
  tar -C "$STAGE" -cf - dotnet | compress > "$RUNTIME_ARCHIVE.tmp"
  mv "$RUNTIME_ARCHIVE.tmp" "$RUNTIME_ARCHIVE"
  rm -rf "$STAGE/dotnet"
fi
cp "$RUNTIME_ARCHIVE" "$OUT/runtime.$EXT"

# Managed code: the test output holds the library, the CLI and every dependency.
echo "[bundle] staging managed assemblies and vstest.console"
mkdir -p "$STAGE/app" "$STAGE/app/vstest/Extensions"
cp -r "$APP/." "$STAGE/app/"
# Native assets of dependencies (SkiaSharp, HarfBuzz for plots) ship for every RID: keep this host's only.
case "$(uname -m)" in aarch64|arm64) RID=linux-arm64 ;; *) RID=linux-x64 ;; esac
if [[ -d "$STAGE/app/runtimes" ]]; then
  find "$STAGE/app/runtimes" -mindepth 1 -maxdepth 1 ! -name "$RID" -exec rm -rf {} +
fi
python3 - "$SDK_DIR" "$STAGE/app/vstest" <<'PY'
import json, os, shutil, sys
sdk, dest = sys.argv[1], sys.argv[2]
deps = json.load(open(os.path.join(sdk, "vstest.console.deps.json")))
files = {os.path.basename(f) for target in deps["targets"].values() for lib in target.values() for f in lib.get("runtime", {})}
# The test-host provider extension loads DependencyModel from the SDK folder.
files |= {"Microsoft.Extensions.DependencyModel.dll", "vstest.console.deps.json", "vstest.console.runtimeconfig.json", "vstest.console.dll.config"}
for f in sorted(files):
    shutil.copy2(os.path.join(sdk, f), os.path.join(dest, f))
for f in os.listdir(os.path.join(sdk, "Extensions")):
    if f.endswith(".dll"):
        shutil.copy2(os.path.join(sdk, "Extensions", f), os.path.join(dest, "Extensions", f))
PY
tar -C "$STAGE" -cf - app | compress > "$OUT/app.$EXT"

echo "[bundle] staging native sources"
mkdir -p "$STAGE/src"
cp -r "$ROOT/native" "$ROOT/cmake" "$STAGE/src/"
tar -C "$STAGE" -cf - src | compress > "$OUT/src.$EXT"

cp "$ROOT/tools/gpu-bundle/verify.sh" "$ROOT/tools/gpu-bundle/peers.py" "$ROOT/tools/gpu-bundle/report.py" "$ROOT/tools/gpu-bundle/coverage.py" "$OUT/"
chmod +x "$OUT/verify.sh"

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
cat > "$OUT/manifest.json" <<JSON
{
  "schema": "deepkernels-gpu-bundle/1",
  "created_utc": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "commit": "$COMMIT",
  "dotnet_runtime": "$RUNTIME_VERSION",
  "vstest": "$(basename "$SDK_DIR")",
  "compression": "$EXT",
  "archives": { "runtime": "runtime.$EXT", "app": "app.$EXT", "src": "src.$EXT" }
}
JSON

SIZE=$(du -sb "$OUT" | cut -f1)
MIB=$(( (SIZE + 1048575) / 1048576 ))
echo "[bundle] wrote $OUT ($MIB MiB): $(cd "$OUT" && ls | tr '\n' ' ')"
if [[ $FAST == 0 && $MIB -gt $LIMIT_MIB ]]; then
  echo "make-bundle.sh: bundle is $MIB MiB, over the $LIMIT_MIB MiB limit" >&2
  exit 1
fi
echo "[bundle] on the GPU host: bash verify.sh OUTDIR   (bash verify.sh --help for options)"
