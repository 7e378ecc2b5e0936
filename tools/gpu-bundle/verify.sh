#!/usr/bin/env bash
# DeepKernels GPU verification: run on a Linux GPU host that has nvcc, CMake and optionally
# PyTorch, but no .NET and no network. Everything else is in this folder (see make-bundle.sh).
#
#   bash verify.sh OUTDIR [--dry-run | --emulate] [--skip-peers] [--skip-sanitizer] [--skip-bench] [--v3-bench] [--work DIR]
#
# Steps (progress is printed as it goes; each step is timed and recorded):
#   1 unpack     the .NET runtime, the managed build and the native sources; run `deepkernels info`
#   2 gpu        detect the GPU (nvidia-smi)
#   3 native     build the fatbin for this GPU with CMake + nvcc (sm_90a on Hopper when nvcc >= 12.3),
#                then `deepkernels profile` on it
#   4 tests      the [Category("Cuda")] tests through vstest.console (results: cuda-tests.trx)
#   5 bench      `deepkernels bench --backend cuda` for every op at its anchor shapes, within a time
#                budget: the smallest case of every op (and kernel variant) first, then the rest;
#                each result lists the kernels it launched (traced driver)
#   6 peers      PyTorch peers (torch._scaled_mm, matmul, _grouped_mm, SDPA) when torch sees the GPU
#   7 sanitizer  compute-sanitizer memcheck, one case per kernel of the fatbin, six cases per process
#                (bench --cases-file): coverage.py picks, for each kernel, the cheapest benchmark case
#                that launched it (kernels no case launched are listed as uncovered in coverage.json
#                and the report); without bench results, the smallest case of every op
#   8 report     report.json + report.md in OUTDIR
# --v3-bench adds, after step 7 and with 360 s more budget, `bench-v3`: the DeepSeek-V3 4-layer
# model-decode cases (batch 1, 8, 64; real widths, 256 experts): a 17 GB synthetic checkpoint is
# written once into $DEEPKERNELS_CACHE (or ~/.cache/deepkernels; ~30 s on 16 cores) and loaded
# per case; results in bench-v3.json (tok/s, ms per layer, % of HBM bandwidth). Step 5 lists these
# cases as skipped (they need more time than its budget).
# --dry-run does 1, 2 and 8 only, reporting the GPU steps as skipped, plus a "runner" step that runs
# one CPU test through the bundled vstest.console (used by CI without a GPU; also done when no GPU is found).
# --emulate rehearses the GPU steps on a host without a GPU, to check this script and the bundle end
# to end: the kernel emulator (backend cuda-emu) stands in for the device. The fatbin is built with
# the local nvcc and profiled as on a GPU host; the CUDA tests run on the emulator; the bench runs
# the smallest case of the ops in $VERIFY_EMU_OPS (default rmsnorm,act-quant,moe-router,kv-cache-write);
# peers are skipped; the sanitizer step runs as usual. Emulator times say nothing of GPU speed.
# $VERIFY_TEST_FILTER narrows the CUDA tests (a vstest filter ANDed with TestCategory=Cuda).
# Exit codes: 0 ok; 1 a CUDA test failed or a step that must work did not; 2 bad usage;
# 3 no usable GPU (not a dry run), so nothing was verified.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
START=$(date +%s)

# The header comment above, up to the first line of code.
usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
OUT=""; WORK=""; DRY=0; EMULATE=0; SKIP_PEERS=0; SKIP_SAN=0; SKIP_BENCH=0; V3_BENCH=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --emulate) EMULATE=1 ;;
    --skip-peers) SKIP_PEERS=1 ;;
    --skip-sanitizer) SKIP_SAN=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --v3-bench) V3_BENCH=1 ;;
    --work) [[ $# -ge 2 ]] || { echo "verify.sh: --work needs a directory" >&2; exit 2; }; WORK="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "verify.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$OUT" ]] || { echo "verify.sh: more than one OUTDIR given ('$OUT', '$1')" >&2; exit 2; }; OUT="$1" ;;
  esac
  shift
done
[[ -n "$OUT" ]] || { echo "verify.sh: OUTDIR is required" >&2; usage >&2; exit 2; }
[[ $DRY == 1 && $EMULATE == 1 ]] && { echo "verify.sh: --dry-run and --emulate exclude each other" >&2; exit 2; }
[[ $EMULATE == 1 && $V3_BENCH == 1 ]] && { echo "verify.sh: --v3-bench needs a GPU (17 GB of weights), not the emulator" >&2; exit 2; }
mkdir -p "$OUT" || { echo "verify.sh: cannot create '$OUT'" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
WORK="${WORK:-$OUT/work}"
mkdir -p "$WORK"; WORK="$(cd "$WORK" && pwd)"
STEPS="$OUT/steps.tsv"
: > "$STEPS"
FAILED=0
T0=$START
# The whole run must fit 8 minutes on one H200: steps get min(their cap, what is left of a 450 s
# budget minus what the later steps need at least); with under 10 s left a step gets 1 s (never
# "timeout 0", which would mean no limit) and so fails with exit 124, visibly out of time.
# A rehearsal on the emulator (--emulate) gets 20 minutes: the emulator is far slower than a GPU.
BUDGET_END=$(( START + ${VERIFY_BUDGET_SECONDS:-$(( EMULATE == 1 ? 1200 : 450 ))} + (V3_BENCH == 1 ? 360 : 0) ))
slot() {  # slot CAP RESERVE -> seconds this step may take (1: no time left)
  local left=$(( BUDGET_END - $(date +%s) - $2 ))
  (( left > $1 )) && left=$1
  (( left < 10 )) && left=1
  echo "$left"
}

begin() { T0=$(date +%s); echo "[verify $(( T0 - START ))s] $1: $2"; }
# record NAME STATUS DETAIL   (STATUS: ok | failed | skipped)
record() {
  local now; now=$(date +%s)
  local detail="${3//$'\t'/ }"; detail="${detail//$'\n'/ }"
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(( now - T0 ))" "$detail" >> "$STEPS"
  echo "[verify $(( now - START ))s] $1: $2${3:+ - $3}"
}

archive() {  # archive BASENAME -> path of BASENAME.tar.{xz,gz,zst}
  local e; for e in tar.xz tar.gz tar.zst; do [[ -f "$HERE/$1.$e" ]] && { echo "$HERE/$1.$e"; return 0; }; done
  return 1
}
unpack() {  # unpack ARCHIVE DEST
  case "$1" in
    *.tar.xz) tar -C "$2" -xJf "$1" ;;
    *.tar.gz) tar -C "$2" -xzf "$1" ;;
    *.tar.zst) zstd -dc "$1" | tar -C "$2" -xf - ;;
  esac
}

# ---- 1 unpack --------------------------------------------------------------------------------
begin unpack "runtime, managed build and native sources into $WORK"
ok=1; msg=""
for part in runtime app src; do
  a="$(archive "$part")" || { ok=0; msg="$part archive missing from $HERE"; break; }
  rm -rf "${WORK:?}/$( [[ $part == runtime ]] && echo dotnet || echo "$part")"
  unpack "$a" "$WORK" || { ok=0; msg="could not unpack $a"; break; }
done
export DOTNET_ROOT="$WORK/dotnet" PATH="$WORK/dotnet:$PATH" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# GPU images often lack libicu, without which .NET refuses to start; nothing here needs culture data.
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
DOTNET="$WORK/dotnet/dotnet"
CLI=("$DOTNET" "$WORK/app/DeepKernels.Cli.dll")
if [[ $ok == 1 ]]; then
  if "${CLI[@]}" info > "$OUT/info.txt" 2>&1; then
    msg="$(head -n 1 "$OUT/info.txt")"
  else
    ok=0; msg="deepkernels info failed with the bundled runtime (see info.txt)"
  fi
fi
if [[ $ok == 1 ]]; then record unpack ok "$msg"; else record unpack failed "$msg"; FAILED=1; fi

# ---- 2 gpu -------------------------------------------------------------------------------------
begin gpu "detecting the GPU"
GPU=""; CC=""; NO_GPU_REASON=""; BACKEND=cuda
if [[ $DRY == 1 ]]; then NO_GPU_REASON="dry run"
elif [[ $ok == 0 ]]; then NO_GPU_REASON="unpack failed"
elif [[ $EMULATE == 1 ]]; then GPU="kernel emulator (rehearsal, no GPU)"; CC="emulated"; BACKEND=cuda-emu
elif ! command -v nvidia-smi >/dev/null 2>&1; then NO_GPU_REASON="nvidia-smi not found"
else
  line="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n 1)"
  if [[ -z "$line" ]]; then NO_GPU_REASON="nvidia-smi lists no GPU"
  else GPU="${line%%,*}"; CC="$(echo "${line##*,}" | tr -d ' ')"; fi
fi
if [[ -n "$GPU" ]]; then record gpu ok "$GPU (compute capability $CC)"; else record gpu skipped "$NO_GPU_REASON"; fi

skip_gpu_steps() {
  local s; for s in native tests bench peers sanitizer; do T0=$(date +%s); record "$s" skipped "$1"; done
}

if [[ -z "$GPU" ]]; then
  skip_gpu_steps "no GPU step: $NO_GPU_REASON"
  if [[ $ok == 1 ]]; then
    # Without a GPU, still prove that the bundled runtime runs NUnit tests through vstest.console.
    begin runner "vstest.console on the bundled runtime (one CPU test)"
    if timeout 120 "$DOTNET" "$WORK/app/vstest/vstest.console.dll" "$WORK/app/DeepKernels.Tests.dll" \
         --TestCaseFilter:"FullyQualifiedName~BenchHarnessTests.MedianOfOddAndEvenCounts" > "$OUT/runner-check.log" 2>&1 \
       && grep -q 'Passed!' "$OUT/runner-check.log"; then
      record runner ok "$(grep -E 'Passed!' "$OUT/runner-check.log" | tail -n 1 | sed 's/ - .*//')"
    else
      record runner failed "vstest.console could not run a test (see runner-check.log)"; FAILED=1
    fi
  fi
else
  # ---- 3 native --------------------------------------------------------------------------------
  begin native "building the fatbin with CMake + nvcc"
  # $NVCC when set (the rehearsal passes a CUDA 12 one), else nvcc on PATH, else /usr/local/cuda.
  [[ -n "${NVCC:-}" && -x "${NVCC:-}" ]] || NVCC="$(command -v nvcc || true)"
  [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
  # The compiler's own cuobjdump: an older one misreads sm_90a cubins.
  CUOBJDUMP="$(dirname "${NVCC:-/}")/cuobjdump"; [[ -x "$CUOBJDUMP" ]] || CUOBJDUMP="$(command -v cuobjdump || true)"
  FATBIN="$WORK/build/deepkernels.fatbin"
  if [[ -z "$NVCC" ]] || ! command -v cmake >/dev/null 2>&1; then
    record native failed "nvcc or cmake not found"; FAILED=1
  elif t=$(slot 200 200) && (( t > 1 )) && timeout "$t" cmake -S "$WORK/src/native" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" -DDEEPKERNELS_EMULATOR=OFF > "$OUT/native-build.log" 2>&1 \
       && timeout "$(slot 200 200)" cmake --build "$WORK/build" -j"$(nproc)" >> "$OUT/native-build.log" 2>&1 && [[ -f "$FATBIN" ]]; then
    archs="$([[ -n "$CUOBJDUMP" ]] && "$CUOBJDUMP" --list-elf "$FATBIN" 2>/dev/null | grep -o 'sm_[0-9]*a\?' | sort -u | tr '\n' ' ')"
    export DEEPKERNELS_FATBIN="$FATBIN"
    note=""
    if [[ -f "$WORK/build/ptxas.log.sm90a-failure.txt" ]]; then
      # The Hopper kernels failed to compile; the build fell back to the portable kernels.
      cp "$WORK/build/ptxas.log.sm90a-failure.txt" "$OUT/sm90a-build-failure.log"
      note=" (sm_90a FAILED to compile, see sm90a-build-failure.log: portable kernels only)"; FAILED=1
    elif [[ "$CC" == 9.0 && "$archs" != *sm_90a* ]]; then note=" (no sm_90a: nvcc older than 12.3?)"; fi
    record native ok "$("$NVCC" --version | grep -o 'release [0-9.]*'); SASS: ${archs:-unknown}$note"
    # One run writes the table and the JSON: disassembling the fatbin is the slow part (~30 s).
    timeout "$(slot 90 200)" "${CLI[@]}" profile --fatbin "$FATBIN" --report "$WORK/build/resource-report.json" --json-out "$OUT/profile.json" > "$OUT/profile.txt" 2>&1 \
      || echo "[verify $(( $(date +%s) - START ))s] profile did not finish (see profile.txt); the sanitizer step falls back to the smallest case per op"
  else
    record native failed "build failed (see native-build.log)"; FAILED=1
  fi

  # ---- 4 tests ---------------------------------------------------------------------------------
  begin tests "CUDA test category on $BACKEND"
  # DEEPKERNELS_TEST_CUDA=cuda: on a GPU host an unusable device fails the tests instead of skipping them.
  if DEEPKERNELS_TEST_CUDA=$BACKEND timeout "$(slot $(( EMULATE == 1 ? 900 : 180 )) 120)" "$DOTNET" "$WORK/app/vstest/vstest.console.dll" "$WORK/app/DeepKernels.Tests.dll" \
       --TestCaseFilter:"TestCategory=Cuda${VERIFY_TEST_FILTER:+&$VERIFY_TEST_FILTER}" --ResultsDirectory:"$OUT" --logger:"trx;LogFileName=$OUT/cuda-tests.trx" \
       > "$OUT/cuda-tests.log" 2>&1; then rc=0; else rc=$?; fi
  summary="$(grep -E '(Passed|Failed|Skipped)!|No test matches' "$OUT/cuda-tests.log" | tail -n 1 | sed 's/ - [^ ]*\.dll.*//')"
  if [[ $rc == 0 ]]; then record tests ok "${summary:-passed}"; else record tests failed "exit $rc: ${summary:-see cuda-tests.log}"; FAILED=1; fi

  # ---- 5 bench ---------------------------------------------------------------------------------
  if [[ $SKIP_BENCH == 1 ]]; then T0=$(date +%s); record bench skipped "--skip-bench"
  else
    if [[ $EMULATE == 1 ]]; then
      selection=(--op "${VERIFY_EMU_OPS:-rmsnorm,act-quant,moe-router,kv-cache-write}" --smallest --repeats 2 --warmup 1)
      begin bench "deepkernels bench --backend $BACKEND ${selection[*]}"
    else
      selection=()
      begin bench "deepkernels bench --backend cuda (all ops, smallest case of each first)"
    fi
    t=$(slot 150 70)
    # The CLI stops starting cases after --budget-s, leaving time to write the JSON.
    if timeout "$t" "${CLI[@]}" bench --backend $BACKEND "${selection[@]}" --budget-s $(( t > 30 ? t - 20 : 1 )) --json "$OUT/bench-cuda.json" > "$OUT/bench-cuda.txt" 2>&1; then
      record bench ok "$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(len(r["results"]), "cases measured,", len(r.get("skipped", [])), "skipped")' "$OUT/bench-cuda.json" 2>/dev/null || echo "see bench-cuda.txt")"
    else record bench failed "exit $? (see bench-cuda.txt)"; fi
  fi

  # ---- 6 peers ---------------------------------------------------------------------------------
  if [[ $SKIP_PEERS == 1 ]]; then T0=$(date +%s); record peers skipped "--skip-peers"
  elif [[ $EMULATE == 1 ]]; then T0=$(date +%s); record peers skipped "emulator rehearsal: no GPU for PyTorch"
  elif ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    T0=$(date +%s); record peers skipped "PyTorch with CUDA is not importable"
  else
    begin peers "PyTorch peers"
    if timeout "$(slot 90 40)" python3 "$HERE/peers.py" --json "$OUT/peers.json" > "$OUT/peers.txt" 2>&1; then record peers ok "$(tail -n 1 "$OUT/peers.txt")"
    else record peers failed "exit $? (see peers.txt)"; fi
  fi

  # ---- 7 sanitizer -----------------------------------------------------------------------------
  if [[ $SKIP_SAN == 1 ]]; then T0=$(date +%s); record sanitizer skipped "--skip-sanitizer"
  elif ! command -v compute-sanitizer >/dev/null 2>&1; then T0=$(date +%s); record sanitizer skipped "compute-sanitizer not found"
  else
    begin sanitizer "compute-sanitizer memcheck, one case per kernel"
    bad=""; checked=0; plan=()
    if [[ -f "$OUT/bench-cuda.json" && -f "$OUT/profile.json" ]] && command -v python3 >/dev/null 2>&1 \
       && mapfile -t plan < <(python3 "$HERE/coverage.py" "$OUT/bench-cuda.json" "$OUT/profile.json" "$OUT/coverage.json") && (( ${#plan[@]} > 0 )); then
      how="per kernel ($(python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print(len(c["kernels"]) - len(c["uncovered"]), "kernels covered,", len(c["uncovered"]), "uncovered")' "$OUT/coverage.json"))"
    else
      # No bench results to trace: the smallest case of every op.
      mapfile -t plan < <("${CLI[@]}" bench --backend $BACKEND --smallest --list 2>/dev/null | cut -c16-)
      how="smallest case per op (no bench results to map kernels)"
    fi
    # A few cases per compute-sanitizer process (--cases-file): starting .NET and loading the
    # instrumented fatbin costs seconds per process, so one case per process would not fit 8 minutes.
    n=0; unusable=""; per=6
    for (( i = 0; i < ${#plan[@]}; i += per )); do
      n=$(( n + 1 ))
      part=("${plan[@]:i:per}")
      t=$(slot 120 5)
      if (( t <= 1 )); then bad+="[no time for: $(IFS=';'; echo "${part[*]}")] "; continue; fi
      printf '%s\n' "${part[@]}" > "$OUT/sanitizer-$n.cases"
      echo "[verify $(( $(date +%s) - START ))s] sanitizer $n: cases $(( i + 1 ))-$(( i + ${#part[@]} )) of ${#plan[@]}"
      log="$OUT/sanitizer-$n.log"
      if timeout "$t" compute-sanitizer --tool memcheck --error-exitcode 86 "${CLI[@]}" bench --backend $BACKEND --cases-file "$OUT/sanitizer-$n.cases" --repeats 1 --warmup 0 \
           > "$log" 2>&1; then rc=0; else rc=$?; fi
      checked=$(( checked + ${#part[@]} ))
      summary="$(grep -o 'ERROR SUMMARY: [0-9]* error' "$log" | tail -n 1 | grep -o '[0-9][0-9]*')"
      if [[ -n "$summary" ]] && ! grep -q 'Device not supported' "$log"; then
        # The tool ran the cases: memcheck errors, or a case failing under it, are failures (the log names the kernel).
        if [[ "$summary" != 0 || $rc != 0 ]]; then bad+="[sanitizer-$n.log: $summary errors, exit $rc] "; fi
      elif [[ $rc == 124 ]]; then bad+="[sanitizer-$n.log: timed out after ${t} s] "
      elif (( n > 1 )); then bad+="[sanitizer-$n.log: no error summary, exit $rc] "
      else
        # No error summary from the first run: the tool cannot run here at all (seen: a toolkit without its
        # injection library; "Device not supported" under gVisor). That checks nothing, and says nothing of our kernels.
        unusable="$(grep -v 'COMPUTE-SANITIZER' "$log" | grep -m 1 '=========' | sed 's/^=* *//')"
        unusable="${unusable:-exit $rc without an error summary}"
        break
      fi
    done
    if [[ -n "$unusable" ]]; then record sanitizer skipped "compute-sanitizer cannot run here: $unusable (sanitizer-$n.log)"
    elif [[ -z "$bad" && $EMULATE == 1 ]]; then record sanitizer ok "clean: $checked cases, $how; emulator: no device code was checked"
    elif [[ -z "$bad" ]]; then record sanitizer ok "clean: $checked cases, $how"
    else record sanitizer failed "errors in: $bad"; FAILED=1; fi
  fi

  # ---- 7b bench-v3 (opt-in, last: slowest, and never at the expense of the steps above) --------
  if [[ $V3_BENCH == 1 ]]; then
    begin bench-v3 "deepkernels bench --backend cuda --op model-decode --case v3-4layer"
    t=$(slot 360 10)
    # The CLI skips a case (listed with its reason) when its estimate exceeds the budget left, and
    # when the device has too little memory or the cache too little disk.
    if timeout "$t" "${CLI[@]}" bench --backend $BACKEND --op model-decode --case v3-4layer --budget-s $(( t > 30 ? t - 20 : 1 )) \
         --json "$OUT/bench-v3.json" > "$OUT/bench-v3.txt" 2>&1; then
      record bench-v3 ok "$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
parts = ["%s: %.1f tok/s, %.3f ms/layer, %.1f%% of HBM" % (x["name"], x["tokensPerSecond"], x["msPerLayer"], x.get("percentMemoryPeak") or 0) for x in r["results"]]
print("; ".join(parts) or "no case measured;", len(r.get("skipped", [])), "skipped")' "$OUT/bench-v3.json" 2>/dev/null || echo "see bench-v3.txt")"
    else record bench-v3 failed "exit $? (see bench-v3.txt)"; fi
  fi
fi

# ---- 8 report ----------------------------------------------------------------------------------
begin report "report.json + report.md"
T_REPORT=$T0
if command -v python3 >/dev/null 2>&1 && python3 "$HERE/report.py" "$OUT" "${GPU:-none}" "$DRY" "$(( $(date +%s) - START ))" "$EMULATE"; then
  T0=$T_REPORT; record report ok "$OUT/report.json"
  python3 "$HERE/report.py" "$OUT" "${GPU:-none}" "$DRY" "$(( $(date +%s) - START ))" "$EMULATE" >/dev/null 2>&1 || true
else
  # Minimal report without Python: the step table only.
  {
    echo '{"schema":"deepkernels-gpu-report/1","python":false,"steps":['
    first=1
    while IFS=$'\t' read -r n s t d; do
      d="${d//\\/\\\\}"; d="${d//\"/\\\"}"
      [[ $first == 1 ]] || echo ','; first=0
      printf '{"name":"%s","status":"%s","seconds":%s,"detail":"%s"}' "$n" "$s" "$t" "$d"
    done < "$STEPS"
    echo ']}'
  } > "$OUT/report.json"
  { echo "# DeepKernels GPU verification"; echo; echo "| step | status | s | detail |"; echo "|---|---|---|---|"
    while IFS=$'\t' read -r n s t d; do echo "| $n | $s | $t | $d |"; done < "$STEPS"; } > "$OUT/report.md"
  T0=$T_REPORT; record report ok "$OUT/report.json (no python3: steps only)"
fi

echo "[verify $(( $(date +%s) - START ))s] done: $OUT/report.md"
if [[ $FAILED == 1 ]]; then exit 1; fi
if [[ -z "$GPU" && $DRY == 0 ]]; then exit 3; fi
exit 0
