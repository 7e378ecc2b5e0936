using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>MLA decode cases (issue 6): b = 128, mean seqlen 4096/8192, fixed and varlen, h_q, s_q, BF16/FP8 cache.</summary>
internal static class MlaBenchCases
{
    /// <summary>DeepSeek-V3's softmax scale with YaRN.</summary>
    private const float SoftmaxScale = 0.1352338f;

    public static void Add(List<OpBenchCase> cases)
    {
        // The issue's whole grid: b = 128, mean seqlen 4096/8192 (fixed and varlen), h_q 16..128,
        // s_q 1 (decode) and 2 (MTP, causal), BF16 and FP8 caches. CUDA runs all of it; the CPU
        // gets the same grid behind --full (minutes per case on a small machine). CUDA times both
        // kernels (DEEPKERNELS_MLA_KERNEL=portable|sm90; sm90 reports "not supported" off Hopper).
        foreach (var layout in new[] { LatentCacheLayout.BFloat16, LatentCacheLayout.Fp8 })
            foreach (int seqlen in new[] { 4096, 8192 })
                foreach (bool varlen in new[] { false, true })
                    foreach (int sQ in new[] { 1, 2 })
                        foreach (int h in new[] { 16, 32, 64, 128 })
                        {
                            foreach (string variant in GemmBenchCases.KernelVariants)
                                cases.Add(Case(128, seqlen, varlen, h, sQ, layout, BenchTargets.Cuda, " " + variant) with { Variant = variant });
                            cases.Add(Case(128, seqlen, varlen, h, sQ, layout, BenchTargets.Cpu, " cpu") with { FullGridOnly = true });
                        }
        // CPU default: the issue's target is stated at h_q = 16; a batch small enough for this machine.
        cases.Add(Case(16, 4096, false, 16, 1, LatentCacheLayout.BFloat16, BenchTargets.Cpu, ""));
        cases.Add(Case(16, 4096, false, 16, 1, LatentCacheLayout.Fp8, BenchTargets.Cpu, ""));
        cases.Add(Case(16, 4096, true, 16, 1, LatentCacheLayout.BFloat16, BenchTargets.Cpu, ""));
        cases.Add(Case(16, 4096, false, 128, 2, LatentCacheLayout.BFloat16, BenchTargets.Cpu, ""));
    }

    /// <summary>Sequence lengths: all equal, or uniform in [1, 2*mean - 1] (seeded) for varlen.</summary>
    internal static int[] Seqlens(int batch, int mean, bool varlen)
    {
        var lens = new int[batch];
        var rng = new Random(17);
        for (int i = 0; i < batch; i++) lens[i] = varlen ? rng.Next(1, 2 * mean) : mean;
        return lens;
    }

    private static OpBenchCase Case(int batch, int meanSeqlen, bool varlen, int hQ, int sQ, LatentCacheLayout layout, BenchTargets targets, string suffix)
    {
        int[] lens = Seqlens(batch, meanSeqlen, varlen);
        long total = lens.Sum(l => (long)l);
        int bytesPerToken = LatentCacheFormat.BytesPerToken(layout);
        // DESIGN.md: sum(seqlen)*h_kv*576*2 + b*s_q*h_q*(576+512)*2 bytes (BF16 cache; the FP8 cache
        // reads its own 656 bytes per token), s_q*sum(seqlen)*h_q*(576+512)*2 flops.
        double bytes = (double)total * bytesPerToken + (double)batch * sQ * hQ * (576 + 512) * 2;
        double flops = (double)sQ * total * hQ * (576 + 512) * 2;
        string cache = layout == LatentCacheLayout.Fp8 ? "fp8" : "bf16";
        string name = $"mla-decode b={batch} seqlen={(varlen ? "varlen" : "")}{meanSeqlen} h_q={hQ} s_q={sQ} {cache}{suffix}";
        return new OpBenchCase("mla-decode", name,
            new Dictionary<string, long> { ["b"] = batch, ["seqlen"] = meanSeqlen, ["h_q"] = hQ, ["s_q"] = sQ, ["varlen"] = varlen ? 1 : 0 },
            flops, bytes, MathPrecision.Bf16, targets,
            backend => Prepare(backend, lens, hQ, sQ, layout));
    }

    private static IOpBenchInstance Prepare(Backend backend, int[] lens, int hQ, int sQ, LatentCacheLayout layout)
    {
        const int pageSize = LatentCacheFormat.DefaultPageSize;
        int batch = lens.Length;
        int pages = lens.Sum(l => (l + pageSize - 1) / pageSize);
        var owned = new List<IDisposable>();
        try
        {
            var cache = new PagedLatentCache(backend, pages, pageSize, layout);
            owned.Add(cache);
            var seqs = new int[batch];
            for (int i = 0; i < batch; i++)
            {
                seqs[i] = cache.Allocator.CreateSequence();
                cache.Allocator.Append(seqs[i], lens[i]);
            }
            FillCache(backend, cache);
            int maxPages = cache.Allocator.MaxPages(seqs);
            var table = new int[batch * maxPages];
            var seqlens = new int[batch];
            cache.Allocator.ExportBlockTable(seqs, maxPages, table, seqlens);
            var tableT = backend.Upload<int>(table, DType.Int32, batch, maxPages);
            owned.Add(tableT);
            var lensT = backend.Upload<int>(seqlens, DType.Int32, batch);
            owned.Add(lensT);
            var qHost = new BFloat16[(long)batch * sQ * hQ * LatentCacheFormat.HeadDim];
            var rng = new Random(3);
            for (int i = 0; i < qHost.Length; i++) qHost[i] = (BFloat16)(float)(rng.NextDouble() * 2 - 1);
            var q = backend.Upload<BFloat16>(qHost, DType.BFloat16, batch, sQ, hQ, LatentCacheFormat.HeadDim);
            owned.Add(q);
            var output = backend.Allocate(DType.BFloat16, batch, sQ, hQ, LatentCacheFormat.LatentDim);
            owned.Add(output);
            var lse = backend.Allocate(DType.Float32, batch, hQ, sQ);
            owned.Add(lse);
            var schedule = MlaDecode.CreateSchedule(backend, seqlens, pageSize);
            return new DelegateBenchInstance(
                () => MlaDecode.Run(backend, q, cache, tableT, lensT, SoftmaxScale, sQ > 1, output, lse, schedule),
                [.. owned]);
        }
        catch
        {
            owned.ForEach(o => o.Dispose());
            throw;
        }
    }

    /// <summary>Valid token records: BF16 values in [-1, 1), or FP8 codes with finite scales and BF16 RoPE parts.</summary>
    private static void FillCache(Backend backend, PagedLatentCache cache)
    {
        var rng = new Random(9);
        if (cache.Layout == LatentCacheLayout.BFloat16)
        {
            BenchFill.Upload(backend, cache.Storage, 9, chunk =>
            {
                for (int i = 0; i + 1 < chunk.Length; i += 2)
                {
                    ushort bits = BFloat16.ToRaw((float)(rng.NextDouble() * 2 - 1));
                    chunk[i] = (byte)bits;
                    chunk[i + 1] = (byte)(bits >> 8);
                }
            });
            return;
        }
        int record = LatentCacheFormat.Fp8BytesPerToken;
        BenchFill.Upload(backend, cache.Storage, 9, chunk =>
        {
            for (int t = 0; t + record <= chunk.Length; t += record)
            {
                for (int i = 0; i < LatentCacheFormat.LatentDim; i++)
                    if ((chunk[t + i] & 0x7F) == 0x7F) chunk[t + i] ^= 0x01;
                for (int g = 0; g < LatentCacheFormat.Fp8Groups; g++)
                    BitConverter.TryWriteBytes(chunk.AsSpan(t + LatentCacheFormat.Fp8ScalesOffset + 4 * g, 4), 1f / 448f);
                for (int i = 0; i < LatentCacheFormat.RopeDim; i++)
                    BitConverter.TryWriteBytes(chunk.AsSpan(t + LatentCacheFormat.Fp8RopeOffset + 2 * i, 2), BFloat16.ToRaw((float)(rng.NextDouble() * 2 - 1)));
            }
        }, record);
    }
}
