using BenchmarkDotNet.Attributes;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Bench.Infrastructure;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Bench;

/// <summary>
/// FP8 per-token-group activation quantization on the CPU backend at DeepSeek-V3's hidden size
/// (K = 7168), from a decode token to a prefill chunk. Memory-bound: read FP32, write FP8 + scales.
/// </summary>
public class ActivationQuantizationBenchmarks : IThroughputBenchmark
{
    private Backend _backend = null!;
    private TensorBuffer _input = null!, _output = null!, _scales = null!;

    /// <summary>Tokens.</summary>
    [Params(1, 128, 4096)]
    public int M { get; set; } = 1;

    /// <summary>Hidden size.</summary>
    [Params(7168)]
    public int K { get; set; } = 7168;

    /// <inheritdoc />
    public double Flops => 2.0 * M * K;

    /// <inheritdoc />
    public double Bytes => (double)M * K * 4 + (double)M * K + (double)M * ActivationQuantization.GroupCount(K) * 4;

    /// <summary>Allocates and fills the tensors once per parameter set.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        var rng = new Random(1);
        var x = new float[M * K];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        _input = _backend.Upload<float>(x, DType.Float32, M, K);
        _output = _backend.Allocate(DType.Float8E4M3, M, K);
        _scales = _backend.Allocate(DType.Float32, M, ActivationQuantization.GroupCount(K));
    }

    /// <summary>One quantization of the whole [M, K] tensor.</summary>
    [Benchmark]
    public void Quantize() => ActivationQuantization.Quantize(_backend, _input, _output, _scales);

    /// <summary>Releases the tensors.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _input.Dispose();
        _output.Dispose();
        _scales.Dispose();
        _backend.Dispose();
    }
}
