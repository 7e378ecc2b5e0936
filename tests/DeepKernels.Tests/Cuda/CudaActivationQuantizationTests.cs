using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Cuda;

public class CudaActivationQuantizationTests
{
    private static float[] Input(int m, int k, int seed)
    {
        var rng = new Random(seed);
        var x = new float[m * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-4, 4)));
        if (k >= 2) { x[1] = float.NaN; x[k - 1] = float.PositiveInfinity; }
        if (k >= 256) for (int i = 128; i < 256; i++) x[k + i] = 0;  // an all-zero group in row 1
        if (m >= 3) for (int i = 0; i < k; i++) x[2 * k + i] = i % 2 == 0 ? -0f : 0f;  // a row of signed zeros
        return x;
    }

    private static (byte[] Q, byte[] Scales) Run(Backend backend, float[] x, int m, int k, DType inputType, DType scaleType)
    {
        int groups = ActivationQuantization.GroupCount(k);
        using var input = inputType == DType.Float32
            ? backend.Upload<float>(x, DType.Float32, m, k)
            : backend.Upload<ushort>(x.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, m, k);
        using var q = backend.Allocate(DType.Float8E4M3, m, k);
        using var s = backend.Allocate(scaleType, m, groups);
        backend.Zero(q);
        ActivationQuantization.Quantize(backend, input, q, s);
        backend.Synchronize();
        return (backend.Download<byte>(q), backend.Download<byte>(s));
    }

    [Category("Cuda")]
    [Test]
    [Combinatorial]
    public void CudaEqualsCpuBitForBit(
        [Values(DType.Float32, DType.BFloat16)] DType inputType,
        [Values(DType.Float32, DType.UE8M0)] DType scaleType,
        [Values(1, 300, 7168)] int k)
    {
        var cuda = CudaTestBackends.Get();
        const int m = 3;
        var x = Input(m, k, k * 7 + (int)inputType);
        var expected = Run(CpuBackend.Default, x, m, k, inputType, scaleType);
        var actual = Run(cuda, x, m, k, inputType, scaleType);
        Assert.That(actual.Scales, Is.EqualTo(expected.Scales), "scales");
        for (int i = 0; i < expected.Q.Length; i++)
        {
            if (actual.Q[i] != expected.Q[i])
                Assert.Fail($"q[{i / k}, {i % k}]: CUDA 0x{actual.Q[i]:x2}, CPU 0x{expected.Q[i]:x2} (input {x[i]})");
        }
    }

    // The launch the op makes, checked over the fake driver: this runs on every machine.
    [Test]
    public void LaunchesOneCtaPerGroupWithTheDeclaredSignature()
    {
        using var driver = new FakeCudaDriver { LaunchArgumentCount = 7 };
        var image = new KernelImage([1], "test", null, KernelSignatureTable.Parse(KernelReportTests.SignaturesJson), null);
        Assert.That(CudaBackend.TryCreate(driver, 0, image, out var backend, out string reason), Is.True, reason);
        using (backend)
        {
            using var x = backend!.Allocate(DType.BFloat16, 5, 300);
            using var q = backend.Allocate(DType.Float8E4M3, 5, 300);
            using var s = backend.Allocate(DType.UE8M0, 5, 3);
            ActivationQuantization.Quantize(backend, x, q, s);
            Assert.That(driver.Launches, Has.Count.EqualTo(1));
            var launch = driver.Launches[0];
            Assert.That(launch.Grid, Is.EqualTo(new DeepKernels.Cuda.Dim3(3, 5, 1)));
            Assert.That(launch.Block, Is.EqualTo(new DeepKernels.Cuda.Dim3(128)));
            Assert.That(launch.Shared, Is.EqualTo(0u));
            var a = launch.Args;
            Assert.That(a[0], Is.EqualTo((ulong)x.View.Data));
            Assert.That((int)a[1], Is.EqualTo(1), "x_is_bf16");
            Assert.That(a[2], Is.EqualTo((ulong)q.View.Data));
            Assert.That(a[3], Is.EqualTo((ulong)s.View.Data));
            Assert.That((int)a[4], Is.EqualTo(1), "scales_ue8m0");
            Assert.That((int)a[5], Is.EqualTo(5), "m");
            Assert.That((int)a[6], Is.EqualTo(300), "k");
        }
    }

    [Test]
    public void SplitsRowsBeyondTheGridLimitIntoSeveralLaunches()
    {
        using var driver = new FakeCudaDriver { LaunchArgumentCount = 7 };
        var image = new KernelImage([1], "test", null, KernelSignatureTable.Parse(KernelReportTests.SignaturesJson), null);
        Assert.That(CudaBackend.TryCreate(driver, 0, image, out var backend, out _), Is.True);
        using (backend)
        {
            const int m = CudaBackend.MaxRowsPerLaunch + 10, k = 130;
            using var x = backend!.Allocate(DType.Float32, m, k);
            using var q = backend.Allocate(DType.Float8E4M3, m, k);
            using var s = backend.Allocate(DType.Float32, m, 2);
            ActivationQuantization.Quantize(backend, x, q, s);
            Assert.That(driver.Launches, Has.Count.EqualTo(2));
            var second = driver.Launches[1];
            Assert.That(second.Grid, Is.EqualTo(new DeepKernels.Cuda.Dim3(2, 10)));
            ulong row0 = CudaBackend.MaxRowsPerLaunch;
            Assert.That(second.Args[0], Is.EqualTo((ulong)x.View.Data + row0 * k * 4));
            Assert.That(second.Args[2], Is.EqualTo((ulong)q.View.Data + row0 * k));
            Assert.That(second.Args[3], Is.EqualTo((ulong)s.View.Data + row0 * 2 * 4));
            Assert.That((int)second.Args[5], Is.EqualTo(10));
        }
    }
}
