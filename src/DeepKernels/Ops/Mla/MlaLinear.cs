using System.Numerics.Tensors;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// Plain FP32 projection y[M, N] = x[M, K] w[N, K]^T over dequantized weights, used by the MLA
/// block until it switches to the FP8 block-scaled GEMM op. Parallel over output rows of w.
/// </summary>
internal static class MlaLinear
{
    public static void Apply(ReadOnlySpan<float> x, float[] w, int n, int k, Span<float> y, ParallelOptions options)
    {
        Guard.Length(w.Length, (long)n * k, nameof(w));
        if (x.Length % k != 0) throw new ArgumentException($"Expected a multiple of K = {k} values, got {x.Length}.", nameof(x));
        int m = x.Length / k;
        Guard.Length(y.Length, (long)m * n, nameof(y));
        var xs = x.ToArray();
        var ys = new float[y.Length];
        Parallel.For(0, n, options, j =>
        {
            var row = w.AsSpan(j * k, k);
            for (int i = 0; i < m; i++) ys[i * n + j] = TensorPrimitives.Dot(xs.AsSpan(i * k, k), row);
        });
        ys.CopyTo(y);
    }
}
