using System.Diagnostics;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Memory.KvCache;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>
/// The Hopper MLA decode (dk_mla_decode_sm90: TMA page loads, mbarrier ring, wgmma, two consumer
/// warp groups) forced through the dispatch and compared with the CPU backend on the same inputs,
/// with the portable kernel's tolerances (<see cref="CudaMlaTests.Compare"/>: caches start as
/// 0xFF bytes, so unused slots hold NaN). Runs in the kernel emulator, or on a CC 9.0 device whose
/// fatbin holds the kernel for sm_90a; ignored elsewhere.
/// </summary>
[Category("Cuda")]
public class MlaDecodeSm90Tests
{
    private static void CompareSm90(int[] lens, int pageSize, LatentCacheLayout layout, int sQ, int hQ, bool causal, DType qType, DType outType, int seed)
    {
        var cuda = CudaTestBackends.Get();
        if (cuda.Driver is not EmulatorDriver && !cuda.HasNativeSm90Mla)
            Assert.Ignore($"{cuda.Name} cannot run the sm_90a kernel (needs CC 9.0 and a fatbin built with nvcc >= 12.3).");
        CudaBackend.MlaKernelOverride.Value = "sm90";
        try
        {
            Assert.That(cuda.UsesSm90Mla, Is.True, "the override selects the Hopper kernel");
            var watch = Stopwatch.StartNew();
            CudaMlaTests.Compare(lens, pageSize, layout, sQ, hQ, causal, qType, outType, seed);
            TestContext.Out.WriteLine($"dk_mla_decode_sm90 lens [{string.Join(",", lens)}] P={pageSize} {layout} s_q={sQ} h_q={hQ} on {cuda.Name}: {watch.Elapsed.TotalMilliseconds:F0} ms (CPU reference included)");
        }
        finally
        {
            CudaBackend.MlaKernelOverride.Value = null;
        }
    }

    [Test] // empty, single-token, page-boundary and multi-tile sequences; tiles of 4 pages
    public void VariableLengthsBf16Page16MatchCpu() =>
        CompareSm90([0, 1, 16, 64, 65, 130], 16, LatentCacheLayout.BFloat16, 1, 16, false, DType.BFloat16, DType.Float32, 31);

    [Test] // one head; chunks starting mid-tile-row and pages of 64
    public void OneHeadPage64MatchCpu() =>
        CompareSm90([0, 63, 64, 129], 64, LatentCacheLayout.BFloat16, 1, 1, false, DType.Float32, DType.BFloat16, 17);

    [Test] // 128 heads: two 64-row CTAs per chunk
    public void ManyHeadsMatchCpu() =>
        CompareSm90([1, 70], 64, LatentCacheLayout.BFloat16, 1, 128, false, DType.BFloat16, DType.Float32, 5);

    [Test] // MTP: s_q = 2, causal, rows of both query positions in one CTA
    public void CausalMtpMatchCpu() =>
        CompareSm90([1, 2, 40, 64], 16, LatentCacheLayout.BFloat16, 2, 16, true, DType.Float32, DType.BFloat16, 7);

    [Test] // pages of 128 and 256: tiles start mid-page (TMA boxes at slot offsets 64, 128, 192)
    public void LargePagesMatchCpu()
    {
        CompareSm90([200, 5], 128, LatentCacheLayout.BFloat16, 1, 16, false, DType.BFloat16, DType.Float32, 23);
        CompareSm90([300], 256, LatentCacheLayout.Fp8, 1, 4, false, DType.BFloat16, DType.Float32, 29);
    }

    [Test] // MTP with 128 heads: 256 query rows in four CTAs per chunk, FP8 pages
    public void CausalManyHeadsFp8MatchCpu() =>
        CompareSm90([2, 66], 64, LatentCacheLayout.Fp8, 2, 128, true, DType.BFloat16, DType.BFloat16, 41);

    [TestCase(16, false)]
    [TestCase(64, true)]
    public void Fp8CacheMatchesCpu(int pageSize, bool causal) =>
        CompareSm90([0, 3, 33, 70], pageSize, LatentCacheLayout.Fp8, causal ? 2 : 1, 16, causal, DType.BFloat16, DType.Float32, pageSize);

    /// <summary>
    /// The Hopper and portable kernels on the same device cache: both round Q, K/V and P to BF16
    /// the same way and differ only in summation order, so they agree far tighter than either
    /// agrees with the FP32 CPU backend. Prints each kernel's emulated time (the whole decode:
    /// split kernel + combine).
    /// </summary>
    [TestCase(LatentCacheLayout.BFloat16)]
    [TestCase(LatentCacheLayout.Fp8)]
    public void AgreesWithThePortableKernel(LatentCacheLayout layout)
    {
        var cuda = CudaTestBackends.Get();
        if (cuda.Driver is not EmulatorDriver && !cuda.HasNativeSm90Mla)
            Assert.Ignore($"{cuda.Name} cannot run the sm_90a kernel.");
        int[] lens = [256, 100];
        const int hQ = 64;
        var (cache, table, maxPages) = CudaMlaTests.Build(cuda, lens, 64, layout, 3);
        using (cache)
        {
            var q = KernelTestData.Gaussian(lens.Length * hQ * 576, new Random(4));
            (float[] Out, float[] Lse) Run(string kernel)
            {
                CudaBackend.MlaKernelOverride.Value = kernel;
                try
                {
                    CudaMlaTests.Decode(cuda, cache, table, maxPages, lens, q, DType.BFloat16, 1, hQ, false, DType.Float32); // warm-up
                    var watch = Stopwatch.StartNew();
                    var r = CudaMlaTests.Decode(cuda, cache, table, maxPages, lens, q, DType.BFloat16, 1, hQ, false, DType.Float32);
                    TestContext.Out.WriteLine($"{kernel}: lens [{string.Join(",", lens)}] P=64 {layout} h_q={hQ} on {cuda.Name}: {watch.Elapsed.TotalMilliseconds:F0} ms");
                    return r;
                }
                finally
                {
                    CudaBackend.MlaKernelOverride.Value = null;
                }
            }
            var hopper = Run("sm90");
            var portable = Run("portable");
            Assert.That(KernelTestData.CalcDiff(hopper.Out, portable.Out), Is.LessThan(1e-6), "out calc_diff sm90 vs portable");
            for (int i = 0; i < portable.Lse.Length; i++)
                Assert.That(hopper.Lse[i], Is.EqualTo(portable.Lse[i]).Within(1e-4), $"lse[{i}]");
        }
    }

    [TestCase("sm90", false, true)]
    [TestCase("portable", true, false)]
    [TestCase(null, true, true)]
    [TestCase("auto", false, false)]
    [TestCase(" SM90 ", false, true)]
    public void KernelSelection(string? setting, bool native, bool expected) =>
        Assert.That(CudaBackend.SelectsSm90Mla(setting, native), Is.EqualTo(expected));

    [Test]
    public void AutoPicksTheHopperKernelOnlyWhereItRunsNatively()
    {
        if (Environment.GetEnvironmentVariable(CudaBackend.MlaKernelEnvironmentVariable) is not null)
            Assert.Ignore($"{CudaBackend.MlaKernelEnvironmentVariable} is set in this environment.");
        var cuda = CudaTestBackends.Get();
        Assert.That(cuda.UsesSm90Mla, Is.EqualTo(cuda.HasNativeSm90Mla));
        if (cuda.Driver is EmulatorDriver) Assert.That(cuda.HasNativeSm90Mla, Is.False, "the emulator runs the Hopper kernel only when forced");
    }

    [Test]
    public void UnknownKernelSettingIsRejected() =>
        Assert.That(() => CudaBackend.SelectsSm90Mla("hopper", true),
            Throws.InvalidOperationException.With.Message.Contains(CudaBackend.MlaKernelEnvironmentVariable));
}
