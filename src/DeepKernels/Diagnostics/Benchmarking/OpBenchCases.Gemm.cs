using DeepKernels.Backends;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>FP8 GEMM and grouped (MoE) GEMM cases at the DeepSeek-V3 anchor shapes (issues 4 and 5).</summary>
internal static class GemmBenchCases
{
    /// <summary>DeepSeek-V3's (N, K) pairs: q_a/kv_a fused, q_b, kv_b, o_proj, expert gate_up, expert down.</summary>
    /// <summary>The CUDA kernels of the FP8 GEMMs and MLA decode, as DEEPKERNELS_GEMM_KERNEL and DEEPKERNELS_MLA_KERNEL name them.</summary>
    internal static readonly string[] KernelVariants = ["portable", "sm90"];

    internal static readonly (int N, int K)[] NkPairs = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)];

    public static void Add(List<OpBenchCase> cases)
    {
        // CUDA: every M of the issue at every (N, K), for both kernels (pinned through
        // DEEPKERNELS_GEMM_KERNEL; the sm90 cases report "not supported" off Hopper). CPU: decode
        // and a small prefill at three pairs.
        foreach (string variant in KernelVariants)
            foreach (int m in new[] { 1, 4, 16, 64, 128, 512, 4096 })
                foreach (var (n, k) in NkPairs)
                    cases.Add(Dense(m, n, k, BenchTargets.Cuda, " " + variant) with { Variant = variant });
        foreach (int m in new[] { 1, 16, 128 })
            foreach (var (n, k) in new[] { (2112, 7168), (4096, 7168), (7168, 2048) })
                cases.Add(Dense(m, n, k, BenchTargets.Cpu, " cpu"));

        // Grouped, contiguous: G groups of `rows` rows each. Masked: (G, expected_m). Both kernels
        // on CUDA, as for the dense GEMM.
        foreach (string variant in KernelVariants)
            foreach (var (n, k) in new[] { (4096, 7168), (7168, 2048) })
            {
                foreach (int g in new[] { 4, 8 }) cases.Add(Contiguous(g, 4096, n, k, BenchTargets.Cuda, " " + variant) with { Variant = variant });
                foreach (var (g, em) in new[] { (1, 1024), (4, 256), (32, 192) })
                    cases.Add(Masked(g, em, n, k, BenchTargets.Cuda, " " + variant) with { Variant = variant });
            }
        // CPU uses a few experts and rows so weights and time fit a small machine.
        cases.Add(Contiguous(4, 64, 7168, 2048, BenchTargets.Cpu, " cpu"));
        cases.Add(Masked(4, 16, 4096, 7168, BenchTargets.Cpu, " cpu"));
    }

    private static OpBenchCase Dense(int m, int n, int k, BenchTargets targets, string suffix = "") => new(
        "gemm", $"gemm M={m} N={n} K={k}{suffix}",
        new Dictionary<string, long> { ["M"] = m, ["N"] = n, ["K"] = k },
        Fp8Gemm.Flops(m, n, k), Fp8Gemm.Bytes(m, n, k), MathPrecision.Fp8, targets,
        backend =>
        {
            var owned = new List<IDisposable>();
            try
            {
                var a = Own(owned, Fp8Tensor(backend, 11, m, k));
                var sa = Own(owned, Scales(backend, m, Fp8Gemm.BlockCount(k)));
                var b = Own(owned, Fp8Tensor(backend, 12, n, k));
                var sb = Own(owned, Scales(backend, Fp8Gemm.BlockCount(n), Fp8Gemm.BlockCount(k)));
                var d = Own(owned, backend.Allocate(DType.BFloat16, m, n));
                return new DelegateBenchInstance(() => Fp8Gemm.Run(backend, a, sa, b, sb, d), [.. owned]);
            }
            catch
            {
                owned.ForEach(o => o.Dispose());
                throw;
            }
        });

    private static OpBenchCase Contiguous(int groups, int rows, int n, int k, BenchTargets targets, string suffix)
    {
        long m = (long)groups * rows;
        double bytes = (double)m * k + (double)groups * n * k + 2.0 * m * n;
        return new("grouped-gemm", $"grouped-gemm contiguous G={groups} M={m} N={n} K={k}{suffix}",
            new Dictionary<string, long> { ["G"] = groups, ["M"] = m, ["N"] = n, ["K"] = k },
            GroupedFp8Gemm.Flops(m, n, k), bytes, MathPrecision.Fp8, targets,
            backend =>
            {
                var owned = new List<IDisposable>();
                try
                {
                    var ids = new int[m];
                    for (long r = 0; r < m; r++) ids[r] = (int)(r / rows);
                    var a = Own(owned, Fp8Tensor(backend, 21, m, k));
                    var sa = Own(owned, Scales(backend, m, Fp8Gemm.BlockCount(k)));
                    var mi = Own(owned, backend.Upload<int>(ids, DType.Int32, m));
                    var b = Own(owned, Fp8Tensor(backend, 22, groups, n, k));
                    var sb = Own(owned, Scales(backend, groups, Fp8Gemm.BlockCount(n), Fp8Gemm.BlockCount(k)));
                    var d = Own(owned, backend.Allocate(DType.BFloat16, m, n));
                    return new DelegateBenchInstance(() => GroupedFp8Gemm.Contiguous(backend, a, sa, mi, b, sb, d), [.. owned]);
                }
                catch
                {
                    owned.ForEach(o => o.Dispose());
                    throw;
                }
            });
    }

    private static OpBenchCase Masked(int groups, int expectedM, int n, int k, BenchTargets targets, string suffix)
    {
        // Every group holds expected_m tokens; m_max rounds that up to a 128-row tile.
        int mMax = (expectedM + 127) / 128 * 128;
        long rows = (long)groups * expectedM;
        double bytes = (double)rows * k + (double)groups * n * k + 2.0 * rows * n;
        return new("grouped-gemm", $"grouped-gemm masked G={groups} expected_m={expectedM} N={n} K={k}{suffix}",
            new Dictionary<string, long> { ["G"] = groups, ["expected_m"] = expectedM, ["M"] = rows, ["N"] = n, ["K"] = k },
            GroupedFp8Gemm.Flops(rows, n, k), bytes, MathPrecision.Fp8, targets,
            backend =>
            {
                var owned = new List<IDisposable>();
                try
                {
                    var a = Own(owned, Fp8Tensor(backend, 31, groups, mMax, k));
                    var sa = Own(owned, Scales(backend, groups, mMax, Fp8Gemm.BlockCount(k)));
                    var mm = Own(owned, backend.Upload<int>(Enumerable.Repeat(expectedM, groups).ToArray(), DType.Int32, groups));
                    var b = Own(owned, Fp8Tensor(backend, 32, groups, n, k));
                    var sb = Own(owned, Scales(backend, groups, Fp8Gemm.BlockCount(n), Fp8Gemm.BlockCount(k)));
                    var d = Own(owned, backend.Allocate(DType.BFloat16, groups, mMax, n));
                    return new DelegateBenchInstance(() => GroupedFp8Gemm.Masked(backend, a, sa, mm, b, sb, d, expectedM), [.. owned]);
                }
                catch
                {
                    owned.ForEach(o => o.Dispose());
                    throw;
                }
            });
    }

    private static TensorBuffer Own(List<IDisposable> owned, TensorBuffer buffer)
    {
        owned.Add(buffer);
        return buffer;
    }

    /// <summary>Random finite E4M3 codes (NaN codes 0x7F/0xFF avoided), uploaded in chunks.</summary>
    internal static TensorBuffer Fp8Tensor(Backend backend, int seed, params long[] shape)
    {
        var buffer = backend.Allocate(DType.Float8E4M3, shape);
        BenchFill.Upload(backend, buffer, seed, static chunk =>
        {
            for (int i = 0; i < chunk.Length; i++)
                if ((chunk[i] & 0x7F) == 0x7F) chunk[i] ^= 0x01;
        });
        return buffer;
    }

    /// <summary>FP32 scales in [2^-8, 2^-7): finite and positive, as the ops require.</summary>
    internal static TensorBuffer Scales(Backend backend, params long[] shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var rng = new Random(5);
        var values = new float[count];
        for (long i = 0; i < count; i++) values[i] = (1f + (float)rng.NextDouble()) / 256f;
        return backend.Upload<float>(values, DType.Float32, shape);
    }
}

/// <summary>Fills large device tensors from a reusable host chunk, so setup stays cheap at 100+ MB.</summary>
internal static class BenchFill
{
    private const int ChunkBytes = 16 << 20;

    /// <summary>Turns random bytes into finite BF16 values of magnitude in [0.125, 2) (little endian: the odd byte holds sign and exponent).</summary>
    public static void FixBFloat16(byte[] chunk)
    {
        for (int i = 1; i < chunk.Length; i += 2) chunk[i] = (byte)((chunk[i] & 0x81) | 0x3E);
    }

    /// <summary>Uploads a random chunk, adjusted by <paramref name="fix"/>, repeated over <paramref name="tensor"/>; chunks hold whole records of <paramref name="recordBytes"/>.</summary>
    public static void Upload(Backend backend, TensorView tensor, int seed, Action<byte[]>? fix = null, int recordBytes = 1)
    {
        long total = tensor.ByteCount;
        var rng = new Random(seed);
        var chunk = new byte[(int)Math.Min(ChunkBytes / recordBytes * recordBytes, total)];
        rng.NextBytes(chunk);
        fix?.Invoke(chunk);
        for (long offset = 0; offset < total; offset += chunk.Length)
        {
            int length = (int)Math.Min(chunk.Length, total - offset);
            var part = new TensorView(tensor.Data + (nint)offset, DType.UInt8, tensor.Location, length);
            backend.CopyFromHost(chunk.AsSpan(0, length), part);
        }
    }
}
