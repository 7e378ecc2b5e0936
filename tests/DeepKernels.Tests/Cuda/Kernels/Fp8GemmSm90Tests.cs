using System.Diagnostics;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>
/// The Hopper FP8 GEMM (dk_fp8_gemm_sm90: TMA, mbarrier pipeline, warp-specialised wgmma,
/// persistent tiles) against the CPU backend on the same inputs. Runs in the kernel emulator, or
/// on a CC 9.0 device whose fatbin holds the kernel for sm_90a; ignored elsewhere.
/// </summary>
[Category("Cuda")]
public class Fp8GemmSm90Tests
{
    private static CudaBackend Hopper()
    {
        var cuda = CudaTestBackends.Get();
        if (cuda.Driver is not EmulatorDriver && !cuda.HasNativeSm90Gemm)
            Assert.Ignore($"{cuda.Name} cannot run the sm_90a kernel (needs CC 9.0 and a fatbin built with nvcc >= 12.3).");
        return cuda;
    }

    private static void Compare(Fp8GemmInputs x, DType output, bool accumulate = false, DType scaleType = DType.Float32)
    {
        var cuda = Hopper();
        var expected = x.Run(CpuBackend.Default, output, accumulate, scaleType);
        var watch = Stopwatch.StartNew();
        var actual = x.Run(cuda, output, accumulate, scaleType, args => cuda.Fp8GemmSm90(args));
        watch.Stop();
        AssertAllFinite(actual, "D");
        double diff = CalcDiff(actual, expected);
        TestContext.Out.WriteLine($"dk_fp8_gemm_sm90 {x.M}x{x.N}x{x.K} {output} on {cuda.Name}: calc_diff {diff:E2}, {watch.Elapsed.TotalMilliseconds:F0} ms");
        // Spec bound 1e-3; both sides sum exact FP8 products per 128-K block in FP32 (emulator:
        // double, rounded once; a real H200 accumulates FP8 wgmma with fewer bits inside a block, hence
        // 1e-5 there), so anything above rounding noise (BF16: 2^-9) is a bug.
        Assert.That(diff, Is.LessThan(output == DType.Float32 ? (cuda.Driver is EmulatorDriver ? 1e-6 : 1e-5) : 1e-4), $"calc_diff M={x.M} N={x.N} K={x.K} {output} accumulate={accumulate}");
    }

    [TestCase(64, 128, 256, DType.Float32)]
    [TestCase(64, 128, 256, DType.BFloat16)]
    [TestCase(100, 200, 384, DType.Float32)]   // M and N tails
    [TestCase(100, 200, 384, DType.BFloat16)]
    [TestCase(1, 256, 512, DType.BFloat16)]    // decode row
    [TestCase(129, 130, 144, DType.Float32)]   // K tail inside the second block; 2x2 tiles over the persistent loop
    public void MatchesCpu(int m, int n, int k, DType output) => Compare(Fp8GemmInputs.Make(m, n, k, m * 31 + n + k), output);

    [Test]
    public void AccumulatesIntoFp32Output() => Compare(Fp8GemmInputs.Make(7, 200, 384, 5), DType.Float32, accumulate: true);

    [Test]
    public void Ue8m0ScalesMatchCpu() => Compare(Fp8GemmInputs.Make(33, 150, 272, 9), DType.Float32, scaleType: DType.UE8M0);

    [Test]
    public void MoreTilesThanSmsRunThroughThePersistentLoop()
    {
        // 17 tiles of 128x128 (> the emulator's 8 SMs by default): every CTA takes several tiles and the
        // stage ring wraps across tile boundaries.
        Compare(Fp8GemmInputs.Make(128 * 17, 128, 128, 3), DType.Float32);
    }

    [TestCase(null, false, false)]
    [TestCase(null, true, true)]
    [TestCase("auto", true, true)]
    [TestCase(" SM90 ", false, true)]
    [TestCase("portable", true, false)]
    public void KernelChoiceFollowsTheSettingAndTheDevice(string? setting, bool native, bool expected) =>
        Assert.That(CudaBackend.SelectsSm90Gemm(setting, native), Is.EqualTo(expected));

    [Test]
    public void UnknownKernelChoiceIsReported() =>
        Assert.That(() => CudaBackend.SelectsSm90Gemm("hopper", true),
            Throws.InvalidOperationException.With.Message.Contains(CudaBackend.GemmKernelEnvironmentVariable).And.Message.Contains("'hopper'"));

    [Test]
    public void TheEmulatorRunsThePortableKernelUnlessAskedFor()
    {
        var cuda = Hopper();
        if (cuda.Driver is EmulatorDriver) Assert.That(cuda.HasNativeSm90Gemm, Is.False);
        else Assert.That(cuda.HasNativeSm90Gemm, Is.True);
    }

    [Test]
    public void RealDriverRejectsBadTensorMapArgumentsBeforeAnyNativeCall()
    {
        var driver = RealCudaDriver.Default;
        Assert.That(() => driver.EncodeTensorMapTiled(1, 0x1000, [128, 64], [128], [128, 64], 48),
            Throws.TypeOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("swizzleBytes"));
        Assert.That(() => driver.EncodeTensorMapTiled(3, 0x1000, [128, 64], [128], [128, 64], 0),
            Throws.TypeOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("elementBytes"));
        Assert.That(() => driver.EncodeTensorMapTiled(1, 0x1000, [128, 64], [], [128, 64], 0),
            Throws.ArgumentException.With.Message.Contains("Expected 1 strides"));
    }

    [Test]
    public void DriversWithoutTmaSayTheyCannotEncodeTensorMaps()
    {
        using var fake = new FakeCudaDriver();
        ICudaDriver driver = fake;
        Assert.That(() => driver.EncodeTensorMapTiled(1, 0x1000, [128, 64], [128], [128, 64], 128),
            Throws.TypeOf<NotSupportedException>().With.Message.Contains("tensor maps"));
    }

    [Test]
    public void KNotAMultipleOf16IsRejectedBeforeLaunch()
    {
        var cuda = Hopper();
        const int m = 4, n = 8, k = 100;
        using var a = cuda.Allocate(DType.Float8E4M3, m, k);
        using var b = cuda.Allocate(DType.Float8E4M3, n, k);
        using var sa = cuda.Allocate(DType.Float32, m, 1);
        using var sb = cuda.Allocate(DType.Float32, 1, 1);
        using var d = cuda.Allocate(DType.Float32, m, n);
        var e = Assert.Throws<ArgumentException>(() => cuda.Fp8GemmSm90(new Fp8GemmArgs(a.View, sa.View, b.View, sb.View, d.View, m, n, k, new Fp8GemmOptions())));
        Assert.That(e!.Message, Does.Contain("multiple of 16").And.Contain("K = 100"));
    }
}
