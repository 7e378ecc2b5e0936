#!/usr/bin/env python3
"""Writes report.json and report.md for verify.sh from the step table and the artifacts in OUTDIR.

usage: report.py OUTDIR GPU_NAME DRY_RUN(0|1) ELAPSED_SECONDS [EMULATED(0|1)]

EMULATED: verify.sh --emulate, a rehearsal on the kernel emulator: its times are not GPU figures.
"""
import json
import os
import re
import sys


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def trx_counters(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    # Count the per-test outcomes (the Counters element leaves ignored tests out).
    outcomes = re.findall(r'<UnitTestResult [^>]*testName="([^"]*)"[^>]*outcome="(\w+)"', text)
    failed = [name for name, outcome in outcomes if outcome in ("Failed", "Error", "Timeout", "Aborted")]
    return {
        "total": len(outcomes),
        "passed": sum(1 for _, o in outcomes if o == "Passed"),
        "failed": len(failed),
        "skipped": sum(1 for _, o in outcomes if o in ("NotExecuted", "Inconclusive")),
        "failed_tests": failed,
    }


def match_peer(peer, results):
    """Our fastest result of the peer's op whose shape agrees with the peer's on every key they share
    (at least two). Kinds compare by their first word, so the BF16 matmul peer ("gemm-bf16") is put
    next to our FP8 GEMM at the same shape, and both GEMM kernel variants compete."""
    kind = peer.get("kind", "").split("-")[0]
    matches = []
    for r in results:
        shared = set(peer.get("shape", {})) & set(r.get("shape", {}))
        if len(shared) >= 2 and all(peer["shape"][k] == r["shape"][k] for k in shared) and kind == r.get("op", "").split("-")[0]:
            matches.append(r)
    return min(matches, key=lambda r: r.get("medianMs") or float("inf"), default=None)


def variant_pairs(results):
    """(case without its variant, portable ms, sm90 ms) for every shape measured with both kernels."""
    by_base = {}
    for r in results:
        variant = r.get("variant")
        if variant in ("portable", "sm90") and r["name"].endswith(" " + variant) and r.get("medianMs"):
            by_base.setdefault(r["name"][: -len(variant) - 1], {})[variant] = r["medianMs"]
    return [(base, v["portable"], v["sm90"]) for base, v in by_base.items() if "portable" in v and "sm90" in v]


def main(argv):
    if len(argv) not in (5, 6):
        raise SystemExit(__doc__)
    out, gpu, dry, elapsed = argv[1], argv[2], argv[3] == "1", int(argv[4])
    emulated = len(argv) == 6 and argv[5] == "1"
    steps = []
    with open(os.path.join(out, "steps.tsv"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                steps.append({"name": parts[0], "status": parts[1], "seconds": int(parts[2]), "detail": parts[3]})
    here = os.path.dirname(os.path.abspath(__file__))
    bench = load_json(os.path.join(out, "bench-cuda.json"))
    bench_v3 = load_json(os.path.join(out, "bench-v3.json"))  # verify.sh --v3-bench
    peers = load_json(os.path.join(out, "peers.json"))
    results = (bench or {}).get("results", [])
    comparisons = []
    for p in (peers or {}).get("results", []):
        ours = match_peer(p, results)
        comparisons.append({
            "peer": p.get("name"), "peer_tflops": p.get("tflops"), "peer_gbps": p.get("gbps"),
            "ours": ours.get("name") if ours else None,
            "ours_tflops": ours["gflops"] / 1000 if ours else None,
            "ours_gbps": ours.get("gBps") if ours else None,
            "ratio": (ours["medianMs"] and p.get("median_ms") / ours["medianMs"]) if ours and p.get("median_ms") else None,
        })
    report = {
        "schema": "deepkernels-gpu-report/1",
        "gpu": gpu,
        "dry_run": dry,
        "emulated": emulated,
        "elapsed_seconds": elapsed,
        "bundle": load_json(os.path.join(here, "manifest.json")),
        "steps": steps,
        "cuda_tests": trx_counters(os.path.join(out, "cuda-tests.trx")),
        "bench": bench,
        "bench_v3": bench_v3,
        "peers": peers,
        "comparisons": comparisons,
        "profile": load_json(os.path.join(out, "profile.json")),
        "coverage": load_json(os.path.join(out, "coverage.json")),
    }
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)

    md = [f"# DeepKernels GPU verification", "", f"GPU: **{gpu}**{' (dry run)' if dry else ''}; {elapsed} s in all.", ""]
    if emulated:
        md += ["**Rehearsal on the kernel emulator:** the steps and files are real, but no GPU ran anything;",
               "the benchmark times are the emulator's and say nothing of GPU performance.", ""]
    md += ["| step | status | seconds | detail |", "|---|---|---:|---|"]
    md += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['detail']} |" for s in steps]
    t = report["cuda_tests"]
    if t:
        md += ["", f"CUDA tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped."]
        md += [f"- failed: `{name}`" for name in t["failed_tests"]]
    if results:
        md += ["", "## Benchmarks (emulator wall time, median)" if emulated else "## Benchmarks (CUDA events, L2 flushed, median)", "", "| case | ms | TFLOP/s | GB/s | % compute peak | % memory peak |", "|---|---:|---:|---:|---:|---:|"]
        for r in results:
            pc = "-" if r.get("percentComputePeak") is None else f"{r['percentComputePeak']:.1f}"
            pm = "-" if r.get("percentMemoryPeak") is None else f"{r['percentMemoryPeak']:.1f}"
            md.append(f"| {r['name']} | {r['medianMs']:.4f} | {r['gflops'] / 1000:.2f} | {r['gBps']:.0f} | {pc} | {pm} |")
    pairs = variant_pairs(results)
    if pairs:
        md += ["", "## Hopper kernels against the portable ones (same shape, same run)", "",
               "| case | portable ms | sm90 ms | sm90 speedup |", "|---|---:|---:|---:|"]
        md += [f"| {base} | {p:.4f} | {h:.4f} | {p / h:.2f}x |" for base, p, h in pairs]
    decode = [r for r in results + (bench_v3 or {}).get("results", []) if r.get("tokensPerSecond") is not None]
    if decode:
        md += ["", "## Model decode", "", "| case | step ms | tok/s | ms/layer | GB/s | % memory peak |", "|---|---:|---:|---:|---:|---:|"]
        for r in decode:
            mpl = "-" if r.get("msPerLayer") is None else f"{r['msPerLayer']:.3f}"
            pm = "-" if r.get("percentMemoryPeak") is None else f"{r['percentMemoryPeak']:.1f}"
            md.append(f"| {r['name']} | {r['medianMs']:.3f} | {r['tokensPerSecond']:.1f} | {mpl} | {r['gBps']:.0f} | {pm} |")
        md += [f"- skipped: {k['name']}: {k['reason']}" for k in (bench_v3 or {}).get("skipped", [])]
    cov = report["coverage"]
    if cov:
        kernels = cov.get("kernels", {})
        md += ["", "## Kernel coverage (benchmark and compute-sanitizer case per kernel)", "",
               f"{len(kernels) - len(cov.get('uncovered', []))} of {len(kernels)} kernels launched by a benchmark case.", "",
               "| kernel | cases | sanitizer case |", "|---|---:|---|"]
        for name, k in sorted(kernels.items()):
            md.append(f"| {name} | {k.get('cases', 0)} | {k.get('sanitizer_case') or '**not covered**'} |")
    if comparisons:
        md += ["", "## Peers (PyTorch, same run)", "", "| peer | TFLOP/s | GB/s | ours | TFLOP/s | peer time / our time |", "|---|---:|---:|---|---:|---:|"]
        for c in comparisons:
            fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
            md.append(f"| {c['peer']} | {fmt(c['peer_tflops'])} | {fmt(c['peer_gbps'], 0)} | {c['ours'] or '-'} | {fmt(c['ours_tflops'])} | {fmt(c['ratio'])} |")
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main(sys.argv)
