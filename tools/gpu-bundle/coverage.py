#!/usr/bin/env python3
"""Per-kernel coverage for verify.sh: which benchmark case exercises each kernel in the fatbin.

usage: coverage.py BENCH_JSON PROFILE_JSON OUT_JSON

BENCH_JSON is `deepkernels bench --backend cuda --json` output: every result lists the kernels it
launched (the CLI traces the driver). PROFILE_JSON is `deepkernels profile --json` on the fatbin
just built: its kernels are the ones that must be covered. Nothing is hand-listed, so a kernel
someone registers today is covered as soon as a bench case (or the model decode case) launches it.

Writes OUT_JSON {"kernels": {name: {"benchmarked": bool, "sanitizer_case": case or null}},
"uncovered": [...], "plan": [...]} and prints the plan, one case name per line: for every
kernel, the cheapest measured case (fewest bytes) that launched it; each case once.
Exit codes: 0 ok (uncovered kernels are reported, not fatal), 2 unreadable input.
"""
import json
import sys


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"coverage.py: cannot read {path}: {e}") from None


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bench, profile = load(argv[1]), load(argv[2])
    results = bench.get("results") or []
    fatbin = sorted({k["kernel"] for k in (profile.get("kernels") or []) if k.get("kernel")})
    launched = {}
    for r in results:
        for k in r.get("kernels") or []:
            launched.setdefault(k, []).append(r)
    kernels = {}
    plan = []
    for k in sorted(set(fatbin) | set(launched)):
        cases = launched.get(k, [])
        best = min(cases, key=lambda r: (r.get("bytes") or 0, r["name"])) if cases else None
        kernels[k] = {"in_fatbin": k in fatbin, "benchmarked": bool(cases), "cases": len(cases),
                      "sanitizer_case": best["name"] if best else None}
        if best and best["name"] not in plan:
            plan.append(best["name"])
    uncovered = [k for k in fatbin if k not in launched]
    with open(argv[3], "w", encoding="utf-8") as f:
        json.dump({"kernels": kernels, "uncovered": uncovered, "plan": plan}, f, indent=2)
    for name in plan:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
