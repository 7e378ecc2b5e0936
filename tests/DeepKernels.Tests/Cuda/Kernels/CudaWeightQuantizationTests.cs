using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>CUDA weight (de)quantization per 128x128 block against the CPU backend, bit for bit.</summary>
[Category("Cuda")]
public class CudaWeightQuantizationTests
{
    [TestCase(DType.Float32, DType.Float32, 130, 300)]
    [TestCase(DType.BFloat16, DType.UE8M0, 200, 129)]
    [TestCase(DType.Float32, DType.UE8M0, 1, 7)]
    public void QuantizeThenDequantizeMatchesCpu(DType inputType, DType scaleType, int n, int k)
    {
        var cuda = CudaTestBackends.Get();
        var rng = new Random(n * k);
        var w = Gaussian(n * k, rng, 0.05);
        w[3] = float.NaN;
        if (n * k > 200) w[200] = float.PositiveInfinity;
        for (int i = 0; i < Math.Min(k, 128); i++) w[i] *= 1e4f; // one block with a much larger range

        (byte[] Q, byte[] S, float[] D) Run(Backend backend)
        {
            int rb = WeightQuantization.BlockCount(n), cb = WeightQuantization.BlockCount(k);
            using var input = inputType == DType.Float32 ? Put(backend, w, DType.Float32, n, k) : Put(backend, w.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, n, k);
            using var q = backend.Allocate(DType.Float8E4M3, n, k);
            using var s = backend.Allocate(scaleType, rb, cb);
            using var d = backend.Allocate(inputType, n, k);
            WeightQuantization.Quantize(backend, input, q, s);
            // Dequantize with the (positive, finite) scales just produced; NaN codes stay NaN.
            WeightQuantization.Dequantize(backend, q, s, d);
            backend.Synchronize();
            return (backend.Download<byte>(q), backend.Download<byte>(s), ReadFloats(backend, d));
        }

        var expected = Run(CpuBackend.Default);
        var actual = Run(cuda);
        Assert.That(actual.S, Is.EqualTo(expected.S), "scales");
        for (int i = 0; i < expected.Q.Length; i++)
        {
            if (actual.Q[i] != expected.Q[i]) Assert.Fail($"q[{i / k}, {i % k}]: CUDA 0x{actual.Q[i]:x2}, CPU 0x{expected.Q[i]:x2} (input {w[i]})");
        }
        for (int i = 0; i < expected.D.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(actual.D[i]) != BitConverter.SingleToInt32Bits(expected.D[i]) && !(float.IsNaN(actual.D[i]) && float.IsNaN(expected.D[i])))
                Assert.Fail($"dequantized[{i / k}, {i % k}]: CUDA {actual.D[i]}, CPU {expected.D[i]}");
        }
    }
}
