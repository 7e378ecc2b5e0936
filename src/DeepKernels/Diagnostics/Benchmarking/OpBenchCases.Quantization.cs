using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// Block quantization around the FP8 GEMMs (issue 2), beside act-quant: weight quantization
/// (128x128 blocks, what `deepkernels quantize` runs per tensor), weight dequantization (FP8 back
/// to BF16) and activation dequantization (1x128 groups back to FP32). Shapes are DeepSeek-V3's
/// projections. Bytes are the compulsory traffic; FLOPs count the per-element amax and scale
/// (quantization) or the scale product (dequantization). All three are memory-bound.
/// </summary>
internal static class QuantizationBenchCases
{
    private static readonly (int N, int K)[] WeightShapes = [(2112, 7168), (7168, 2048), (4096, 7168)];

    public static void Add(List<OpBenchCase> cases)
    {
        foreach (var (n, k) in WeightShapes)
            cases.Add(WeightQuantizationCase(n, k));
        foreach (var (n, k) in WeightShapes)
            cases.Add(WeightDequantizationCase(n, k));
        foreach (int m in new[] { 1, 128, 4096 })
            cases.Add(ActivationDequantizationCase(m, 7168));
    }

    private static long BlockScales(long n, long k) => (long)WeightQuantization.BlockCount(n) * WeightQuantization.BlockCount(k);

    // BF16 [N, K] in, FP8 [N, K] + FP32 [N/128, K/128] scales out.
    private static OpBenchCase WeightQuantizationCase(int n, int k) => new(
        "weight-quant", $"weight-quant N={n} K={k}",
        new Dictionary<string, long> { ["N"] = n, ["K"] = k },
        2.0 * n * k, 2.0 * n * k + (double)n * k + 4.0 * BlockScales(n, k), MathPrecision.Fp32, BenchTargets.All,
        backend => BenchOwned.Build(owned =>
        {
            var weight = owned.Keep(backend.Allocate(DType.BFloat16, n, k));
            BenchFill.Upload(backend, weight, 61, BenchFill.FixBFloat16);
            var codes = owned.Keep(backend.Allocate(DType.Float8E4M3, n, k));
            var scales = owned.Keep(backend.Allocate(DType.Float32, WeightQuantization.BlockCount(n), WeightQuantization.BlockCount(k)));
            return () => WeightQuantization.Quantize(backend, weight, codes, scales);
        }));

    // FP8 [N, K] + FP32 block scales in, BF16 [N, K] out.
    private static OpBenchCase WeightDequantizationCase(int n, int k) => new(
        "weight-dequant", $"weight-dequant N={n} K={k}",
        new Dictionary<string, long> { ["N"] = n, ["K"] = k },
        1.0 * n * k, (double)n * k + 4.0 * BlockScales(n, k) + 2.0 * n * k, MathPrecision.Fp32, BenchTargets.All,
        backend => BenchOwned.Build(owned =>
        {
            var codes = owned.Keep(GemmBenchCases.Fp8Tensor(backend, 62, n, k));
            var scales = owned.Keep(GemmBenchCases.Scales(backend, WeightQuantization.BlockCount(n), WeightQuantization.BlockCount(k)));
            var output = owned.Keep(backend.Allocate(DType.BFloat16, n, k));
            return () => WeightQuantization.Dequantize(backend, codes, scales, output);
        }));

    // FP8 [M, K] + FP32 [M, K/128] scales in, FP32 [M, K] out. CPU only: no model path needs it on
    // the GPU, so there is no CUDA kernel for it.
    private static OpBenchCase ActivationDequantizationCase(int m, int k)
    {
        int groups = ActivationQuantization.GroupCount(k);
        return new OpBenchCase("act-dequant", $"act-dequant M={m} K={k}",
            new Dictionary<string, long> { ["M"] = m, ["K"] = k },
            1.0 * m * k, (double)m * k + 4.0 * m * groups + 4.0 * m * k, MathPrecision.Fp32, BenchTargets.Cpu,
            backend => BenchOwned.Build(owned =>
            {
                var codes = owned.Keep(GemmBenchCases.Fp8Tensor(backend, 63, m, k));
                var scales = owned.Keep(GemmBenchCases.Scales(backend, m, groups));
                var output = owned.Keep(backend.Allocate(DType.Float32, m, k));
                return () => ActivationDequantization.Dequantize(backend, codes, scales, output);
            }));
    }
}
