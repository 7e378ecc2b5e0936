using System.Numerics.Tensors;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.Quantize;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// Projection y[M, N] = x[M, K] w[N, K]^T for the MLA block: with an FP8 weight the activations
/// are quantized per 1x128 group and <see cref="Fp8Gemm"/> runs (DeepSeek-V3's FP8 inference
/// numerics); with an FP32 weight a plain FP32 matmul, parallel over output rows of w.
/// </summary>
internal static class MlaLinear
{
    public static void Apply(ReadOnlySpan<float> x, float[]? w, Fp8Weight? w8, int n, int k, Span<float> y, ParallelOptions options)
    {
        if (x.Length % k != 0) throw new ArgumentException($"Expected a multiple of K = {k} values, got {x.Length}.", nameof(x));
        int m = x.Length / k;
        Guard.Length(y.Length, (long)m * n, nameof(y));
        if (m == 0) return;
        if (w8 is not null)
        {
            var xq = new Float8E4M3[x.Length];
            var xs = new float[m * ActivationQuantization.GroupCount(k)];
            ActivationQuantization.Quantize(x, k, xq, xs);
            Fp8Gemm.Run(xq, xs, w8.Weight, w8.ScaleInv, y, m, n, k);
            return;
        }
        ArgumentNullException.ThrowIfNull(w);
        Guard.Length(w.Length, (long)n * k, nameof(w));
        var xa = x.ToArray();
        var ys = new float[y.Length];
        Parallel.For(0, n, options, j =>
        {
            var row = w.AsSpan(j * k, k);
            for (int i = 0; i < m; i++) ys[i * n + j] = TensorPrimitives.Dot(xa.AsSpan(i * k, k), row);
        });
        ys.CopyTo(y);
    }
}
