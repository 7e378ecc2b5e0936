using System.Diagnostics;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>The portable CUDA FP8 GEMM (dk_fp8_gemm) against the CPU backend on the same inputs.</summary>
[Category("Cuda")]
public class CudaFp8GemmTests
{
    private static void Compare(Fp8GemmInputs x, DType output, bool accumulate, DType scaleType = DType.Float32)
    {
        var cuda = CudaTestBackends.Get();
        var expected = x.Run(CpuBackend.Default, output, accumulate, scaleType);
        var actual = x.Run(cuda, output, accumulate, scaleType);
        AssertAllFinite(actual, "D");
        double diff = CalcDiff(actual, expected);
        // The spec bound is 1e-3; both sides accumulate exact FP8 products in FP32 per 128-K
        // block, so anything but rounding noise (BF16 output: 2^-9) is a bug.
        Assert.That(diff, Is.LessThan(output == DType.Float32 ? 1e-6 : 1e-4), $"calc_diff M={x.M} N={x.N} K={x.K} {output} accumulate={accumulate}");
    }

    [Test]
    [Combinatorial]
    public void MatchesCpu(
        [Values(1, 7, 64, 129)] int m,
        [Values(0, 1, 2)] int shape,
        [Values(DType.Float32, DType.BFloat16)] DType output)
    {
        var (n, k) = shape switch { 0 => (128, 256), 1 => (200, 384), _ => (256, 512) };
        Compare(Fp8GemmInputs.Make(m, n, k, m * 31 + shape), output, false);
    }

    [TestCase(7, 200, 384)]
    [TestCase(129, 130, 144)]
    public void AccumulatesIntoFp32Output(int m, int n, int k) => Compare(Fp8GemmInputs.Make(m, n, k, 5), DType.Float32, true);

    // Few output tiles and many K blocks: the split-K path (partials in a workspace, ordered reduce).
    [TestCase(7, 128, 1024, DType.Float32, true)]
    [TestCase(3, 200, 1152, DType.BFloat16, false)]
    public void SplitKMatchesCpu(int m, int n, int k, DType output, bool accumulate)
    {
        var cuda = CudaTestBackends.Get();
        long tiles = (m + 127) / 128 * (long)((n + 127) / 128);
        Assume.That(CudaBackend.GemmSplitK(tiles, (k + 127) / 128, cuda.Device.MultiprocessorCount).Splits, Is.GreaterThan(1), "this device needs no split for the shape");
        Compare(Fp8GemmInputs.Make(m, n, k, 13), output, accumulate);
    }

    [Test]
    public void NaNCodesPropagateLikeCpu()
    {
        var cuda = CudaTestBackends.Get();
        var x = Fp8GemmInputs.Make(9, 140, 256, 21);
        x.A[2 * x.K + 5] = 0x7F;    // row 2 of A
        x.B[3 * x.K + 130] = 0xFF;  // row 3 of B (column 3 of D), negative NaN
        var expected = x.Run(CpuBackend.Default, DType.Float32, false);
        var actual = x.Run(cuda, DType.Float32, false);
        var finiteActual = new List<float>();
        var finiteExpected = new List<float>();
        for (int i = 0; i < expected.Length; i++)
        {
            bool nan = i / x.N == 2 || i % x.N == 3;
            Assert.That(float.IsNaN(expected[i]), Is.EqualTo(nan), $"CPU D[{i / x.N}, {i % x.N}]");
            Assert.That(float.IsNaN(actual[i]), Is.EqualTo(nan), $"CUDA D[{i / x.N}, {i % x.N}] = {actual[i]}");
            if (nan) continue;
            finiteActual.Add(actual[i]);
            finiteExpected.Add(expected[i]);
        }
        Assert.That(CalcDiff([.. finiteActual], [.. finiteExpected]), Is.LessThan(1e-6));
    }

    /// <summary>A decode shape with DeepSeek-V3's K = 7168 (56 K blocks, split-K on small devices).</summary>
    [Test]
    public void DecodeRowWithK7168MatchesCpu() => Compare(Fp8GemmInputs.Make(1, 128, 7168, 71), DType.BFloat16, false);

    [TestCase(33, 150, 272)]
    public void Ue8m0ScalesMatchCpu(int m, int n, int k) => Compare(Fp8GemmInputs.Make(m, n, k, 9), DType.Float32, false, DType.UE8M0);

    [Test]
    public void KNotAMultipleOf16IsRejectedBeforeLaunch()
    {
        var cuda = CudaTestBackends.Get();
        const int m = 4, n = 8, k = 100;
        using var a = cuda.Allocate(DType.Float8E4M3, m, k);
        using var b = cuda.Allocate(DType.Float8E4M3, n, k);
        using var sa = cuda.Allocate(DType.Float32, m, 1);
        using var sb = cuda.Allocate(DType.Float32, 1, 1);
        using var d = cuda.Allocate(DType.Float32, m, n);
        var e = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(cuda, a, sa, b, sb, d));
        Assert.That(e!.Message, Does.Contain("multiple of 16").And.Contain("K = 100"));
    }

    [Test]
    public void MisalignedOperandIsRejectedBeforeLaunch()
    {
        var cuda = CudaTestBackends.Get();
        const int m = 4, n = 8, k = 128;
        using var storage = cuda.Allocate(DType.Float8E4M3, m * k + 16);
        var a = new TensorView(storage.View.Data + 8, DType.Float8E4M3, MemoryLocation.Device, m, k);
        using var b = cuda.Allocate(DType.Float8E4M3, n, k);
        using var sa = cuda.Allocate(DType.Float32, m, 1);
        using var sb = cuda.Allocate(DType.Float32, 1, 1);
        using var d = cuda.Allocate(DType.Float32, m, n);
        var e = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(cuda, a, sa, b, sb, d));
        Assert.That(e!.Message, Does.Contain("16-byte aligned"));
    }

    /// <summary>Issue 8's budget: one 128x128 output tile with K = 512 in under 2 s (emulator, one core).</summary>
    [Test]
    public void OneTileWithK512IsFastEnough()
    {
        var cuda = CudaTestBackends.Get();
        var x = Fp8GemmInputs.Make(128, 128, 512, 77);
        x.Run(cuda, DType.Float32, false); // warm-up (module, allocations)
        var watch = Stopwatch.StartNew();
        x.Run(cuda, DType.Float32, false);
        watch.Stop();
        TestContext.Out.WriteLine($"dk_fp8_gemm 128x128x512 on {cuda.Name}: {watch.Elapsed.TotalMilliseconds:F1} ms");
        Assert.That(watch.Elapsed.TotalSeconds, Is.LessThan(2.0));
    }
}
