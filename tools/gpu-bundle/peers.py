#!/usr/bin/env python3
"""Times PyTorch peers of DeepKernels' ops on the GPU, in the same run as `deepkernels bench`.

  python3 peers.py --json peers.json [--repeats N]

Same method as our harness: CUDA events, warm-up, an L2 flush (a write to a buffer larger than L2)
before every repeat, median. FLOPs and bytes follow DESIGN.md so the report can put each peer next
to our figure at the same shape ("kind" + "shape" are matched against our bench JSON):
  gemm     torch._scaled_mm (FP8 E4M3, per-tensor scales, BF16 out) and torch.matmul (BF16)
           flops 2*M*N*K, bytes M*K + K*N + 2*M*N
  grouped  torch._grouped_mm (BF16; FP8 grouped GEMM is not exposed by every version) when present
  mla      scaled_dot_product_attention on the decompressed MLA shapes (per-head K 192 = 128 + 64 RoPE,
           V 128), decode s_q = 1; bytes = K and V read once + q and out; flops 2*b*h*s*(192+128)
"""
import argparse
import json
import statistics
import sys

import torch

GEMM_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]


def timer(fn, repeats, flush):
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    samples = []
    for i in range(repeats):
        flush.fill_(i & 0xFF)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def entry(kind, name, shape, flops, nbytes, ms, note=""):
    return {"kind": kind, "name": name, "shape": shape, "flops": flops, "bytes": nbytes, "median_ms": ms,
            "tflops": flops / (ms * 1e-3) / 1e12, "gbps": nbytes / (ms * 1e-3) / 1e9, "note": note}


def gemm_peers(results, errors, repeats, flush):
    dev = "cuda"
    for m in (128, 4096):
        for n, k in GEMM_NK:
            shape = {"M": m, "N": n, "K": k}
            a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            b = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
            flops, nbytes = 2.0 * m * n * k, float(m * k + k * n + 2 * m * n)
            try:
                a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
                one = torch.ones((), device=dev, dtype=torch.float32)
                ms = timer(lambda: torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16), repeats, flush)
                results.append(entry("gemm", f"torch._scaled_mm fp8 M={m} N={n} K={k}", shape, flops, nbytes, ms, "per-tensor scales"))
            except Exception as e:  # noqa: BLE001 - report any failure, keep going
                errors.append(f"_scaled_mm {shape}: {e}")
            try:
                ms = timer(lambda: torch.matmul(a, b.t()), repeats, flush)
                results.append(entry("gemm-bf16", f"torch.matmul bf16 M={m} N={n} K={k}", shape, flops, float(2 * (m * k + k * n + m * n)), ms))
            except Exception as e:  # noqa: BLE001
                errors.append(f"matmul {shape}: {e}")
            del a, b
    torch.cuda.empty_cache()


def grouped_peers(results, errors, repeats, flush):
    if not hasattr(torch, "_grouped_mm"):
        errors.append("torch._grouped_mm not available in this PyTorch")
        return
    dev = "cuda"
    for groups, rows in ((4, 4096), (8, 4096)):
        for n, k in ((4096, 7168), (7168, 2048)):
            shape = {"G": groups, "M": groups * rows, "N": n, "K": k}
            try:
                a = torch.randn(groups * rows, k, device=dev, dtype=torch.bfloat16)
                w = torch.randn(groups, n, k, device=dev, dtype=torch.bfloat16)
                offs = torch.arange(rows, groups * rows + 1, rows, device=dev, dtype=torch.int32)
                ms = timer(lambda: torch._grouped_mm(a, w.transpose(-2, -1), offs=offs), repeats, flush)
                m = groups * rows
                results.append(entry("grouped", f"torch._grouped_mm bf16 G={groups} M={m} N={n} K={k}", shape,
                                     2.0 * m * n * k, float(2 * (m * k + groups * n * k + m * n)), ms))
                del a, w
            except Exception as e:  # noqa: BLE001
                errors.append(f"_grouped_mm {shape}: {e}")
    torch.cuda.empty_cache()


def mla_peers(results, errors, repeats, flush):
    dev = "cuda"
    b, s = 128, 4096
    for h in (16, 128):
        shape = {"b": b, "seqlen": s, "h_q": h, "s_q": 1}
        try:
            q = torch.randn(b, h, 1, 192, device=dev, dtype=torch.bfloat16)
            kk = torch.randn(b, h, s, 192, device=dev, dtype=torch.bfloat16)
            v = torch.randn(b, h, s, 128, device=dev, dtype=torch.bfloat16)
            f = torch.nn.functional.scaled_dot_product_attention
            ms = timer(lambda: f(q, kk, v), repeats, flush)
            nbytes = float(2 * (b * h * s * (192 + 128) + b * h * (192 + 128)))
            results.append(entry("mla", f"sdpa decompressed b={b} s={s} h={h}", shape, 2.0 * b * h * s * (192 + 128), nbytes, ms,
                                 "MHA on per-head K/V decompressed from the latent"))
            del q, kk, v
        except Exception as e:  # noqa: BLE001
            errors.append(f"sdpa {shape}: {e}")
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("peers.py: torch sees no CUDA device", file=sys.stderr)
        return 3
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 64 << 20)
    flush = torch.empty(max(2 * l2, 8 << 20), dtype=torch.uint8, device="cuda")
    results, errors = [], []
    for part in (gemm_peers, grouped_peers, mla_peers):
        print(f"peers: {part.__name__}", flush=True)
        part(results, errors, args.repeats, flush)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"device": props.name, "torch": torch.__version__, "results": results, "errors": errors}, f, indent=2)
    for r in results:
        print(f"{r['name']:60s} {r['median_ms']:9.4f} ms {r['tflops']:8.1f} TFLOP/s {r['gbps']:7.0f} GB/s")
    for e in errors:
        print("error:", e.splitlines()[0] if e else e)
    print(f"{len(results)} peer timings, {len(errors)} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
