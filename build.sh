#!/usr/bin/env bash
# One entry point for DeepKernels: build | test | run | bench | profile | pack | gpu-bundle | clean.
# Native kernels are built when a CUDA compiler is found ($NVCC, .toolchain/cuda/nvcc from
# tools/nvcc12/fetch.sh, nvcc on PATH or in /usr/local/cuda);
# the kernel emulator library is built with the host C++ compiler whenever CMake is present.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
CONFIG="${CONFIG:-Release}"
NATIVE_DIR="$ROOT/build/native"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

usage() {
  cat <<'USAGE'
usage: ./build.sh <command> [args]
  build        native kernels (if nvcc is found) and the emulator, then the managed solution
  test         build, then run all tests; prints "tests: N passed, N failed, N skipped"
  run [args]   build, then `deepkernels run` (the main job) with the given arguments
  bench [args] build, then `deepkernels bench` (GPU/CPU harness); `bench dotnet [args]` runs BenchmarkDotNet
  profile [args]  `deepkernels profile`: per-kernel resources, occupancy and SASS mix
  pack         build the DeepKernels NuGet package into artifacts/packages
  gpu-bundle   write build/gpu-bundle: everything a GPU host without .NET needs to verify the kernels
  clean        remove build outputs
USAGE
}

# $NVCC, else the CUDA 12 compiler tools/nvcc12/fetch.sh unpacked (it builds sm_90a), else PATH.
find_nvcc() {
  if [[ -n "${NVCC:-}" && -x "${NVCC}" ]]; then echo "$NVCC"; return; fi
  if [[ -x "$ROOT/.toolchain/cuda/nvcc" ]]; then echo "$ROOT/.toolchain/cuda/nvcc"; return; fi
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc; return; fi
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then echo /usr/local/cuda/bin/nvcc; return; fi
  echo ""
}

build_native() {
  if [[ ! -f "$ROOT/native/CMakeLists.txt" ]]; then return; fi
  if ! command -v cmake >/dev/null 2>&1; then
    echo "[build] cmake not found: skipping native kernels and the emulator (CUDA backend will report 'kernels not built')."
    return
  fi
  local nvcc; nvcc="$(find_nvcc)"
  local args=(-S "$ROOT/native" -B "$NATIVE_DIR" -DCMAKE_BUILD_TYPE=Release)
  if [[ -n "$nvcc" ]]; then
    # ON explicitly: a cache configured earlier without nvcc must not keep CUDA off.
    args+=(-DDEEPKERNELS_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
    echo "[build] native: CUDA compiler $nvcc"
  else
    args+=(-DDEEPKERNELS_CUDA=OFF)
    echo "[build] native: no CUDA compiler found; building the emulator only"
  fi
  mkdir -p "$ROOT/build"
  cmake "${args[@]}" >"$ROOT/build/cmake-configure.log" 2>&1 || { cat "$ROOT/build/cmake-configure.log"; exit 1; }
  grep -E "^-- DeepKernels:|Warning" "$ROOT/build/cmake-configure.log" || true
  if ! cmake --build "$NATIVE_DIR" -j"$(nproc)" >"$ROOT/build/cmake-build.log" 2>&1; then
    tail -n 60 "$ROOT/build/cmake-build.log"
    echo "[build] native build failed (full log: build/cmake-build.log)"
    exit 1
  fi
  grep -iE "warning" "$ROOT/build/cmake-build.log" | head -n 20 || true
  local outputs=()
  for f in deepkernels.fatbin resource-report.json kernel-signatures.json emu/libdeepkernels_emu.so; do
    [[ -f "$NATIVE_DIR/$f" ]] && outputs+=("$f")
  done
  echo "[build] native: ${outputs[*]:-nothing} in build/native"
}

build_managed() {
  dotnet build "$ROOT/Kernels.sln" -c "$CONFIG" -nologo -clp:ErrorsOnly -p:NativeBuildDir="$NATIVE_DIR/"
}

cmd_build() {
  mkdir -p "$ROOT/build"
  if [[ "${SKIP_NATIVE:-0}" != 1 ]]; then build_native; fi
  build_managed
}

cli() {
  dotnet "$ROOT/src/DeepKernels.Cli/bin/$CONFIG/net10.0/DeepKernels.Cli.dll" "$@"
}

cmd_test() {
  cmd_build
  local results="$ROOT/build/test-results"
  rm -rf "$results"; mkdir -p "$results"
  set +e
  dotnet test "$ROOT/tests/DeepKernels.Tests/DeepKernels.Tests.csproj" -c "$CONFIG" --no-build -nologo \
    --logger "trx;LogFileName=tests.trx" --logger "console;verbosity=normal" --results-directory "$results" "$@" \
    >"$results/console.log" 2>&1
  local rc=$?
  set -e
  grep -E "^\s+(Failed|Skipped) |Error Message|^\s+at |Total tests|Passed!|Failed!" "$results/console.log" | head -n 200 || true
  local trx="$results/tests.trx"
  if [[ ! -f "$trx" ]]; then
    tail -n 50 "$results/console.log"
    echo "tests: 0 passed, 1 failed, 0 skipped"
    exit 1
  fi
  local counters passed failed skipped
  counters="$(grep -o '<Counters [^>]*>' "$trx")"
  passed="$(sed -E 's/.* passed="([0-9]+)".*/\1/' <<<"$counters")"
  failed=$(( $(sed -E 's/.* failed="([0-9]+)".*/\1/' <<<"$counters") + $(sed -E 's/.* error="([0-9]+)".*/\1/' <<<"$counters") + $(sed -E 's/.* timeout="([0-9]+)".*/\1/' <<<"$counters") + $(sed -E 's/.* aborted="([0-9]+)".*/\1/' <<<"$counters") ))
  local total; total="$(sed -E 's/.* total="([0-9]+)".*/\1/' <<<"$counters")"
  # NUnit's ignored tests are neither passed nor failed in the TRX counters: count them as skipped.
  skipped=$(( total - passed - failed ))
  if [[ $rc -ne 0 && $failed -eq 0 ]]; then failed=1; fi
  echo "tests: $passed passed, $failed failed, $skipped skipped"
  [[ $failed -eq 0 ]]
}

cmd_pack() {
  cmd_build
  dotnet pack "$ROOT/src/DeepKernels/DeepKernels.csproj" -c "$CONFIG" --no-build -nologo -o "$ROOT/artifacts/packages" -p:NativeBuildDir="$NATIVE_DIR/"
  ls -l "$ROOT/artifacts/packages"
}

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    build) cmd_build ;;
    test) cmd_test "$@" ;;
    run) cmd_build >/dev/null; cli run "$@" ;;
    bench)
      cmd_build >/dev/null
      if [[ "${1:-}" == dotnet ]]; then shift; dotnet run -c Release --no-build --project "$ROOT/bench/DeepKernels.Bench" -- "$@"
      else cli bench "$@"; fi ;;
    profile) cmd_build >/dev/null; cli profile "$@" ;;
    pack) cmd_pack ;;
    gpu-bundle) cmd_build >/dev/null; bash "$ROOT/tools/gpu-bundle/make-bundle.sh" "$@" ;;
    clean) rm -rf "$ROOT/build" "$ROOT/artifacts"; dotnet clean "$ROOT/Kernels.sln" -nologo -v q ;;
    ""|-h|--help|help) usage ;;
    *) echo "build.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
  esac
}
main "$@"
