using System.Diagnostics;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Formats;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>
/// The Hopper grouped FP8 GEMMs (dk_grouped_gemm_contiguous_sm90, dk_grouped_gemm_masked_sm90)
/// against the CPU backend and the portable grouped kernels on the same inputs. Runs in the kernel
/// emulator, or on a CC 9.0 device whose fatbin holds the kernels for sm_90a; ignored elsewhere.
/// Shapes stay at a few 128x128 tiles: the emulator spends ~0.1 s per 128x128x512 tile.
/// </summary>
[Category("Cuda")]
public class GroupedGemmSm90Tests
{
    private const float Sentinel = -7f;

    /// <summary>
    /// calc_diff bound for FP32 output. The emulator sums each wgmma in double and rounds once, so
    /// it agrees with the CPU to FP32 rounding; a real H200 accumulates FP8 wgmma with fewer
    /// mantissa bits inside each 128-K block (what the promotion bounds), so allow it more, still
    /// far below the spec's 1e-3.
    /// </summary>
    private static double Fp32Bound(CudaBackend cuda) => cuda.Driver is EmulatorDriver ? 1e-6 : 1e-5;

    private static CudaBackend Hopper()
    {
        var cuda = CudaTestBackends.Get();
        if (cuda.Driver is not EmulatorDriver && !cuda.HasNativeSm90Gemm)
            Assert.Ignore($"{cuda.Name} cannot run the sm_90a kernels (needs CC 9.0 and a fatbin built with nvcc >= 12.3).");
        return cuda;
    }

    /// <summary>Host inputs of one grouped GEMM; exactly one of MIndices and MaskedM is set.</summary>
    private sealed record Inputs(int Groups, int Rows, int MMax, int N, int K, byte[] A, float[] Sa, int[]? MIndices, int[]? MaskedM, byte[] B, float[] Sb)
    {
        public int KBlocks => (K + 127) / 128;
        public int NBlocks => (N + 127) / 128;

        public static Inputs Contiguous(int[] mIndices, int groups, int n, int k, int seed)
        {
            var rng = new Random(seed);
            int m = mIndices.Length, kb = (k + 127) / 128, nb = (n + 127) / 128;
            return new(groups, m, 0, n, k, Fp8Codes(m * k, rng), Scales(m * kb, rng), mIndices, null, Fp8Codes(groups * n * k, rng), Scales(groups * nb * kb, rng));
        }

        public static Inputs Masked(int[] maskedM, int mMax, int n, int k, int seed)
        {
            var rng = new Random(seed);
            int g = maskedM.Length, rows = g * mMax, kb = (k + 127) / 128, nb = (n + 127) / 128;
            return new(g, rows, mMax, n, k, Fp8Codes(rows * k, rng), Scales(rows * kb, rng), null, maskedM, Fp8Codes(g * n * k, rng), Scales(g * nb * kb, rng));
        }

        /// <summary>Whether output row <paramref name="r"/> is computed (else it must keep the sentinel).</summary>
        public bool RowUsed(int r) => MIndices is int[] ids ? ids[r] >= 0 : r % MMax < MaskedM![r / MMax];

        /// <summary>
        /// Runs on <paramref name="backend"/> through the public API (validation included), or, with
        /// <paramref name="kernel"/>, by handing the validated arguments to that CUDA kernel variant.
        /// </summary>
        public float[] Run(Backend backend, DType output, DType scaleType = DType.Float32, Action<GroupedGemmArgs>? kernel = null)
        {
            bool contiguous = MIndices is not null;
            long[] aShape = contiguous ? [Rows, K] : [Groups, MMax, K];
            long[] saShape = contiguous ? [Rows, KBlocks] : [Groups, MMax, KBlocks];
            long[] dShape = contiguous ? [Rows, N] : [Groups, MMax, N];
            using var a = Put(backend, A, DType.Float8E4M3, aShape);
            using var sa = scaleType == DType.Float32 ? Put(backend, Sa, DType.Float32, saShape) : Put(backend, Sa.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, saShape);
            using var counts = contiguous ? Put(backend, MIndices!, DType.Int32, Rows) : Put(backend, MaskedM!, DType.Int32, Groups);
            using var b = Put(backend, B, DType.Float8E4M3, Groups, N, K);
            using var sb = scaleType == DType.Float32 ? Put(backend, Sb, DType.Float32, Groups, NBlocks, KBlocks) : Put(backend, Sb.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, Groups, NBlocks, KBlocks);
            int size = Rows * N;
            using var d = output == DType.Float32 ? Put(backend, Enumerable.Repeat(Sentinel, size).ToArray(), DType.Float32, dShape)
                                                  : Put(backend, Enumerable.Repeat(BFloat16.ToRaw(Sentinel), size).ToArray(), DType.BFloat16, dShape);
            if (kernel is null)
            {
                if (contiguous) GroupedFp8Gemm.Contiguous(backend, a, sa, counts, b, sb, d);
                else GroupedFp8Gemm.Masked(backend, a, sa, counts, b, sb, d);
            }
            else
            {
                TensorView av = a, sav = sa, dv = d;
                var args = contiguous
                    ? new GroupedGemmArgs(av, sav, counts.View, null, Rows, 0, Groups, N, K, b, sb, dv, 0)
                    : new GroupedGemmArgs(av.Reshape(Rows, K), sav.Reshape(Rows, KBlocks), null, counts.View, Rows, MMax, Groups, N, K, b, sb, dv.Reshape(Rows, N), 0);
                kernel(args);
            }
            backend.Synchronize();
            return ReadFloats(backend, d);
        }
    }

    /// <summary>Hopper vs CPU vs portable on the same inputs; rows that no expert owns must stay untouched.</summary>
    private static void Compare(Inputs x, DType output, DType scaleType = DType.Float32, string label = "")
    {
        var cuda = Hopper();
        var expected = x.Run(CpuBackend.Default, output, scaleType);
        var portable = x.Run(cuda, output, scaleType, args => cuda.GroupedGemmPortable(args));
        var watch = Stopwatch.StartNew();
        var actual = x.Run(cuda, output, scaleType, args => cuda.GroupedGemmSm90(args));
        watch.Stop();
        string kind = x.MIndices is null ? "masked" : "contiguous";
        for (int r = 0; r < x.Rows; r++)
        {
            bool used = x.RowUsed(r);
            for (int c = 0; c < x.N; c++)
            {
                float v = actual[r * x.N + c];
                if (!used && v != Sentinel) Assert.Fail($"{label}: row {r} belongs to no expert but was written (column {c}: {v})");
                if (used && !float.IsFinite(v)) Assert.Fail($"{label}: D[{r}, {c}] = {v}");
            }
        }
        double vsCpu = CalcDiff(actual, expected), vsPortable = CalcDiff(actual, portable);
        TestContext.Out.WriteLine($"sm90 grouped {kind} {label} G={x.Groups} rows={x.Rows} N={x.N} K={x.K} {output} {scaleType} on {cuda.Name}: " +
                                  $"calc_diff vs CPU {vsCpu:E2}, vs portable {vsPortable:E2}, {watch.Elapsed.TotalMilliseconds:F0} ms");
        // Spec bound 1e-3; both sides sum exact FP8 products per 128-K block in FP32, so anything
        // above rounding noise (BF16 output: 2^-9) is a bug.
        double bound = output == DType.Float32 ? Fp32Bound(cuda) : 1e-4;
        Assert.That(vsCpu, Is.LessThan(bound), $"{label}: calc_diff vs CPU");
        Assert.That(vsPortable, Is.LessThan(bound), $"{label}: calc_diff vs the portable kernel");
    }

    /// <summary>MoePermute's layout: each expert's rows, then -1 up to the next multiple of 128.</summary>
    private static int[] AlignedSegments(int[] counts, int trailingPaddingRows = 0)
    {
        var list = new List<int>();
        for (int e = 0; e < counts.Length; e++)
        {
            for (int i = 0; i < counts[e]; i++) list.Add(e);
            while (list.Count % 128 != 0) list.Add(-1);
        }
        list.AddRange(Enumerable.Repeat(-1, trailingPaddingRows));
        return [.. list];
    }

    [TestCase(DType.Float32)]
    [TestCase(DType.BFloat16)]
    public void ContiguousAlignedSegmentsMatchCpu(DType output)
    {
        // Expert 2 has no tokens; expert 1 spans two row tiles; N = 136 is not a multiple of 128,
        // so each expert's last weight box also holds the next expert's first rows.
        Compare(Inputs.Contiguous(AlignedSegments([5, 130, 0, 1]), 4, 136, 256, 11), output, label: "aligned");
    }

    [Test]
    public void ContiguousUpperBoundRowsSkipTrailingPaddingTiles()
    {
        // The row count is an upper bound: two trailing tiles hold only -1 and must cost nothing
        // and write nothing; K = 160 ends inside the second K block.
        Compare(Inputs.Contiguous(AlignedSegments([128, 3], trailingPaddingRows: 256), 2, 128, 160, 12), DType.Float32, label: "upper-bound M");
    }

    [Test]
    public void ContiguousTilesMixingExpertsRunOncePerExpert()
    {
        // Any row order (segments not aligned to 128): a tile holds several experts and padding.
        var rng = new Random(13);
        int[] ids = Enumerable.Range(0, 150).Select(_ => rng.Next(-1, 3)).ToArray();
        Compare(Inputs.Contiguous(ids, 3, 200, 128, 14), DType.Float32, label: "mixed tiles");
    }

    [Test]
    public void ContiguousUe8m0ScalesMatchCpu() =>
        Compare(Inputs.Contiguous(AlignedSegments([40, 0, 7]), 3, 128, 256, 15), DType.Float32, DType.UE8M0, "UE8M0");

    [TestCase(DType.Float32)]
    [TestCase(DType.BFloat16)]
    public void MaskedMatchesCpu(DType output)
    {
        // masked_m = 0 (two experts), a partial tile, and masked_m = m_max (two row tiles, the second
        // partial); m_max = 136 makes boxes reach into the next expert's rows, N = 72 into the next
        // expert's weights.
        Compare(Inputs.Masked([5, 0, 136, 0], 136, 72, 160, 21), output, label: "masked");
    }

    [Test]
    public void MaskedAllExpertsEmptyWritesNothing() =>
        Compare(Inputs.Masked([0, 0, 0], 64, 128, 128, 22), DType.Float32, label: "all empty");

    [Test]
    public void MaskedMoreTilesThanSmsRunThroughThePersistentLoop()
    {
        // 10 tiles over the emulator's 8 SMs: CTAs take tiles of several experts and the stage ring
        // wraps across experts.
        Compare(Inputs.Masked([128, 1, 0, 100, 128, 77], 128, 256, 128, 23), DType.Float32, label: "persistent");
    }

    /// <summary>Emulator counters over one action: CTAs launched, threads per CTA, fiber switches.</summary>
    private static (long Ctas, long ThreadsPerCta, long Switches) Measure(EmulatorDriver emulator, Action action)
    {
        var before = emulator.Statistics;
        action();
        var after = emulator.Statistics;
        long ctas = after.Ctas - before.Ctas;
        return (ctas, ctas == 0 ? 0 : (after.Threads - before.Threads) / ctas, after.FiberSwitches - before.FiberSwitches);
    }

    private static EmulatorDriver Emulator(CudaBackend cuda) =>
        cuda.Driver as EmulatorDriver ?? throw new IgnoreException("counts work through the kernel emulator's statistics");

    [Test]
    public void MaskedExpertsWithoutTokensCostNothing()
    {
        var cuda = Hopper();
        var emulator = Emulator(cuda);
        // The same work (one expert, four tiles) behind 7 or 15 empty experts, on the same grid
        // (min(SMs, 32 or 64 tile upper bound)): the empty experts add no barrier, collective or
        // TMA wait, so no fiber switch.
        if (cuda.Device.MultiprocessorCount > 32) Assert.Ignore("needs the same grid for 8 and 16 experts (at most 32 SMs)");
        int[] few = [0, 0, 0, 128, 0, 0, 0, 0], many = [.. few, .. new int[8]];
        var small = Inputs.Masked(few, 128, 512, 128, 41);
        var large = Inputs.Masked(many, 128, 512, 128, 41);
        var costFew = Measure(emulator, () => small.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmSm90(args)));
        var costMany = Measure(emulator, () => large.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmSm90(args)));
        var portableMany = Measure(emulator, () => large.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmPortable(args)));
        TestContext.Out.WriteLine($"masked, one busy expert: 8 experts {costFew}, 16 experts {costMany}; portable 16 experts {portableMany}");
        Assert.That(costMany.Ctas, Is.EqualTo(costFew.Ctas), "CTAs");
        Assert.That(costMany.Switches, Is.EqualTo(costFew.Switches), "fiber switches (synchronisation work)");
    }

    [NonParallelizable]
    [TestCase("sm90", 384)]
    [TestCase("portable", 256)]
    public void PublicApiFollowsTheGemmKernelSetting(string setting, int threadsPerCta)
    {
        var cuda = Hopper();
        var emulator = Emulator(cuda);
        var x = Inputs.Masked([3, 0, 70], 96, 128, 128, 42);
        string? saved = Environment.GetEnvironmentVariable(CudaBackend.GemmKernelEnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(CudaBackend.GemmKernelEnvironmentVariable, setting);
            float[] actual = [];
            var cost = Measure(emulator, () => actual = x.Run(cuda, DType.Float32));
            Assert.That(cost.ThreadsPerCta, Is.EqualTo(threadsPerCta), $"{CudaBackend.GemmKernelEnvironmentVariable}={setting} ran the wrong kernel");
            Assert.That(CalcDiff(actual, x.Run(CpuBackend.Default, DType.Float32)), Is.LessThan(Fp32Bound(cuda)));
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaBackend.GemmKernelEnvironmentVariable, saved);
        }
    }

    [Test]
    public void DeviceCountsAndIdsOutOfRangeAreClampedOrSkippedLikeThePortableKernels()
    {
        // Device-resident masked_m / m_indices are not validated on the host: the kernels clamp
        // masked_m to [0, m_max] and treat expert ids outside [0, G) as padding, never reading or
        // writing out of bounds.
        var cuda = Hopper();
        var masked = Inputs.Masked([-3, 500, 10], 64, 128, 128, 51);
        var hopper = masked.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmSm90(args));
        var portable = masked.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmPortable(args));
        var clamped = (masked with { MaskedM = [0, 64, 10] }).Run(CpuBackend.Default, DType.Float32);
        Assert.That(CalcDiff(hopper, clamped), Is.LessThan(Fp32Bound(cuda)), "masked vs CPU with clamped counts");
        Assert.That(CalcDiff(hopper, portable), Is.LessThan(Fp32Bound(cuda)), "masked vs portable");
        Assert.That(hopper.Take(64 * 128), Is.All.EqualTo(Sentinel), "an expert with a negative count computes nothing");

        int[] ids = [.. Enumerable.Repeat(0, 20), .. Enumerable.Repeat(7, 30), .. Enumerable.Repeat(1, 14)];
        var contiguous = Inputs.Contiguous(ids, 2, 128, 128, 52);
        var hopperC = contiguous.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmSm90(args));
        var portableC = contiguous.Run(cuda, DType.Float32, kernel: args => cuda.GroupedGemmPortable(args));
        var expectedC = (contiguous with { MIndices = ids.Select(e => e >= 2 ? -1 : e).ToArray() }).Run(CpuBackend.Default, DType.Float32);
        Assert.That(CalcDiff(hopperC, expectedC), Is.LessThan(Fp32Bound(cuda)), "contiguous vs CPU with the bad ids as padding");
        Assert.That(CalcDiff(hopperC, portableC), Is.LessThan(Fp32Bound(cuda)), "contiguous vs portable");
    }

    [Test]
    public void DispatchRunsTheHopperKernelsOnlyWhereTheDenseGemmWould()
    {
        var cuda = Hopper();
        // Same choice as the dense GEMM (DEEPKERNELS_GEMM_KERNEL, then the device).
        Assert.That(cuda.UsesSm90Gemm, Is.EqualTo(CudaBackend.SelectsSm90Gemm(Environment.GetEnvironmentVariable(CudaBackend.GemmKernelEnvironmentVariable), cuda.HasNativeSm90Gemm)));
    }

    [Test]
    public void WeightRowsBeyond32BitTmaCoordinatesFallBackToPortable()
    {
        var fits = new GroupedGemmArgs(default, default, default(TensorView), null, 256, 0, 256, 4096, 7168, default, default, default, 0);
        Assert.That(CudaBackend.GroupedGemmSm90Unsupported(fits), Is.Null);
        var tooMany = fits with { Groups = 1 << 20 };
        Assert.That(CudaBackend.GroupedGemmSm90Unsupported(tooMany), Does.Contain("G*N").And.Contain("[G*N, K]"));
    }

    [Test]
    public void KNotAMultipleOf16IsRejectedBeforeLaunch()
    {
        var cuda = Hopper();
        const int g = 2, m = 4, n = 8, k = 100;
        using var a = cuda.Allocate(DType.Float8E4M3, m, k);
        using var sa = cuda.Allocate(DType.Float32, m, 1);
        using var ids = cuda.Allocate(DType.Int32, m);
        using var b = cuda.Allocate(DType.Float8E4M3, g, n, k);
        using var sb = cuda.Allocate(DType.Float32, g, 1, 1);
        using var d = cuda.Allocate(DType.Float32, m, n);
        var e = Assert.Throws<ArgumentException>(() => cuda.GroupedGemmSm90(new GroupedGemmArgs(a, sa, ids.View, null, m, 0, g, n, k, b, sb, d, 0)));
        Assert.That(e!.Message, Does.Contain("multiple of 16").And.Contain("K = 100"));
    }
}
