using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.Activation;
using DeepKernels.Ops.Embedding;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Ops.Norm;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// The memory-bound glue of a DeepSeek-V3 layer (issues 6 and 7): RMSNorm, SiLU-and-mul, the
/// embedding lookup and the MLA latent cache write (BF16 and FP8 pages). Bytes are the
/// compulsory traffic (each input read once, each output written once); FLOPs are counted as
/// noted per op and matter little (these ops are judged by GB/s).
/// </summary>
internal static class ElementwiseBenchCases
{
    private const int Hidden = 7168, DenseIntermediate = 18432, Vocab = 129280, CpuVocab = 16384;

    public static void Add(List<OpBenchCase> cases)
    {
        foreach (int t in new[] { 1, 128, 4096 })
            cases.Add(RmsNormCase(t));
        foreach (int t in new[] { 1, 128, 4096 })
            cases.Add(SiluAndMulCase(t, t > 128 ? BenchTargets.Cuda : BenchTargets.All));
        foreach (int t in new[] { 1, 128, 4096 })
        {
            cases.Add(EmbeddingCase(t, Vocab, BenchTargets.Cuda, ""));
            cases.Add(EmbeddingCase(t, CpuVocab, BenchTargets.Cpu, " cpu"));
        }
        foreach (var layout in new[] { LatentCacheLayout.BFloat16, LatentCacheLayout.Fp8 })
            foreach (int n in new[] { 128, 4096 })
                cases.Add(CacheWriteCase(n, layout));
    }

    // [T, 7168] FP32 rows, BF16 weight. FLOPs: square-accumulate, scale and weight: 4 per element.
    private static OpBenchCase RmsNormCase(int tokens) => new(
        "rmsnorm", $"rmsnorm T={tokens} H={Hidden}",
        new Dictionary<string, long> { ["T"] = tokens, ["H"] = Hidden },
        4.0 * tokens * Hidden, 2.0 * tokens * Hidden * 4 + Hidden * 2.0, MathPrecision.Fp32, BenchTargets.All,
        backend => BenchOwned.Build(owned =>
        {
            var x = owned.Keep(backend.Upload<float>(OpBenchRegistry.RandomActivations(tokens * Hidden, 51), DType.Float32, tokens, Hidden));
            var weight = owned.Keep(backend.Allocate(DType.BFloat16, Hidden));
            BenchFill.Upload(backend, weight, 52, BenchFill.FixBFloat16);
            var output = owned.Keep(backend.Allocate(DType.Float32, tokens, Hidden));
            return () => RmsNorm.Apply(backend, x, weight, 1e-6f, output);
        }));

    // gate|up [T, 2*18432] FP32 -> [T, 18432] (the dense MLP's width). FLOPs: ~4 per output (sigmoid, two products).
    private static OpBenchCase SiluAndMulCase(int tokens, BenchTargets targets) => new(
        "silu-and-mul", $"silu-and-mul T={tokens} I={DenseIntermediate}",
        new Dictionary<string, long> { ["T"] = tokens, ["I"] = DenseIntermediate },
        4.0 * tokens * DenseIntermediate, 3.0 * tokens * DenseIntermediate * 4, MathPrecision.Fp32, targets,
        backend => BenchOwned.Build(owned =>
        {
            var gateUp = owned.Keep(backend.Upload<float>(OpBenchRegistry.RandomActivations(tokens * 2 * DenseIntermediate, 53), DType.Float32, tokens, 2 * DenseIntermediate));
            var output = owned.Keep(backend.Allocate(DType.Float32, tokens, DenseIntermediate));
            return () => SiluAndMul.Apply(backend, gateUp, output);
        }));

    // BF16 table [V, 7168] (the real vocabulary on CUDA; a smaller one on the CPU), T ids, FP32 rows out.
    private static OpBenchCase EmbeddingCase(int tokens, int vocab, BenchTargets targets, string suffix)
    {
        var rng = new Random(54);
        int[] ids = Enumerable.Range(0, tokens).Select(_ => rng.Next(vocab)).ToArray();
        return new OpBenchCase("embedding", $"embedding T={tokens} V={vocab} H={Hidden}{suffix}",
            new Dictionary<string, long> { ["T"] = tokens, ["V"] = vocab, ["H"] = Hidden },
            0, tokens * (Hidden * 2.0 + Hidden * 4.0 + 4), MathPrecision.Fp32, targets,
            backend => BenchOwned.Build(owned =>
            {
                var table = owned.Keep(backend.Allocate(DType.BFloat16, vocab, Hidden));
                BenchFill.Upload(backend, table, 55, BenchFill.FixBFloat16);
                var output = owned.Keep(backend.Allocate(DType.Float32, tokens, Hidden));
                return () => EmbeddingLookup.Gather(backend, table, ids, output);
            }));
    }

    // n new latents (FP32 [n, 576]) into a paged cache of 64-token pages at consecutive slots:
    // a decode step of b = 128 and a 4096-token prefill. FLOPs (FP8 pages): amax, scale and
    // convert, 3 per compressed value; BF16 pages: 1 rounding per value.
    private static OpBenchCase CacheWriteCase(int tokens, LatentCacheLayout layout)
    {
        int perToken = LatentCacheFormat.BytesPerToken(layout);
        string cache = layout == LatentCacheLayout.Fp8 ? "fp8" : "bf16";
        double flops = layout == LatentCacheLayout.Fp8 ? 3.0 * tokens * LatentCacheFormat.LatentDim : (double)tokens * LatentCacheFormat.HeadDim;
        return new OpBenchCase("kv-cache-write", $"kv-cache-write n={tokens} {cache}",
            new Dictionary<string, long> { ["n"] = tokens, ["bytesPerToken"] = perToken },
            flops, tokens * (LatentCacheFormat.HeadDim * 4.0 + perToken), MathPrecision.Fp32, BenchTargets.All,
            backend => BenchOwned.Build(owned =>
            {
                int pageSize = LatentCacheFormat.DefaultPageSize;
                var cacheT = owned.Keep(new PagedLatentCache(backend, (tokens + pageSize - 1) / pageSize, pageSize, layout));
                var latents = owned.Keep(backend.Upload<float>(OpBenchRegistry.RandomActivations(tokens * LatentCacheFormat.HeadDim, 56), DType.Float32, tokens, LatentCacheFormat.HeadDim));
                int[] slots = Enumerable.Range(0, tokens).ToArray();
                return () => MlaCacheWrite.Write(backend, cacheT, latents, slots);
            }));
    }
}
