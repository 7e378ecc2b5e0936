using DeepKernels.Formats;

namespace DeepKernels.Tests.Moe;

/// <summary>Plain test-side quantizers and references (float64), independent of the library's code paths.</summary>
internal static class MoeTestData
{
    public static float[] Random(int count, int seed, double scale = 1)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
    }

    /// <summary>Per-128x128-block quantization of [groups, n, k] weights: codes and [groups, ceil(n/128), ceil(k/128)] scales.</summary>
    public static (Float8E4M3[] Codes, float[] Scales) QuantizeWeights(float[] w, int groups, int n, int k, bool ue8m0 = false)
    {
        int nb = (n + 127) / 128, kb = (k + 127) / 128;
        var codes = new Float8E4M3[w.Length];
        var scales = new float[groups * nb * kb];
        for (int g = 0; g < groups; g++)
            for (int bn = 0; bn < nb; bn++)
                for (int bk = 0; bk < kb; bk++)
                {
                    float amax = 0;
                    for (int i = bn * 128; i < Math.Min(n, bn * 128 + 128); i++)
                        for (int j = bk * 128; j < Math.Min(k, bk * 128 + 128); j++)
                            amax = Math.Max(amax, Math.Abs(w[((long)g * n + i) * k + j]));
                    float s = Math.Max(amax, 1e-4f) / 448f;
                    if (ue8m0) s = MathF.Pow(2, MathF.Ceiling(MathF.Log2(s)));
                    scales[(g * nb + bn) * kb + bk] = s;
                    for (int i = bn * 128; i < Math.Min(n, bn * 128 + 128); i++)
                        for (int j = bk * 128; j < Math.Min(k, bk * 128 + 128); j++)
                        {
                            long idx = ((long)g * n + i) * k + j;
                            codes[idx] = (Float8E4M3)(w[idx] / s);
                        }
                }
        return (codes, scales);
    }

    /// <summary>Per-1x128-group quantization of [rows, k] activations.</summary>
    public static (Float8E4M3[] Codes, float[] Scales) QuantizeActivations(float[] x, int k, bool ue8m0 = false)
    {
        int rows = x.Length / k, kb = (k + 127) / 128;
        var codes = new Float8E4M3[x.Length];
        var scales = new float[rows * kb];
        for (int r = 0; r < rows; r++)
            for (int bk = 0; bk < kb; bk++)
            {
                float amax = 0;
                for (int j = bk * 128; j < Math.Min(k, bk * 128 + 128); j++) amax = Math.Max(amax, Math.Abs(x[r * k + j]));
                float s = Math.Max(amax, 1e-4f) / 448f;
                if (ue8m0) s = MathF.Pow(2, MathF.Ceiling(MathF.Log2(s)));
                scales[r * kb + bk] = s;
                for (int j = bk * 128; j < Math.Min(k, bk * 128 + 128); j++) codes[r * k + j] = (Float8E4M3)(x[r * k + j] / s);
            }
        return (codes, scales);
    }

    public static double[] DequantizeWeights(Float8E4M3[] codes, float[] scales, int groups, int n, int k)
    {
        int nb = (n + 127) / 128, kb = (k + 127) / 128;
        var result = new double[codes.Length];
        for (int g = 0; g < groups; g++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < k; j++)
                {
                    long idx = ((long)g * n + i) * k + j;
                    result[idx] = codes[idx].ToSingle() * (double)scales[(g * nb + i / 128) * kb + j / 128];
                }
        return result;
    }

    public static double[] DequantizeActivations(Float8E4M3[] codes, float[] scales, int k)
    {
        int kb = (k + 127) / 128;
        var result = new double[codes.Length];
        for (int i = 0; i < codes.Length; i++) result[i] = codes[i].ToSingle() * (double)scales[i / k * kb + i % k / 128];
        return result;
    }

    /// <summary>y[n] = sum_j x[j] * w[g, n, j] in float64.</summary>
    public static double[] MatVec(ReadOnlySpan<double> x, double[] w, int g, int n, int k)
    {
        var y = new double[n];
        for (int i = 0; i < n; i++)
        {
            double sum = 0;
            long row = ((long)g * n + i) * k;
            for (int j = 0; j < k; j++) sum += x[j] * w[row + j];
            y[i] = sum;
        }
        return y;
    }

    /// <summary>DESIGN.md closeness: 1 - 2*sum(x*y)/sum(x*x + y*y) in float64.</summary>
    public static double CalcDiff(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        double xy = 0, xx = 0;
        for (int i = 0; i < x.Count; i++)
        {
            xy += x[i] * y[i];
            xx += x[i] * x[i] + y[i] * y[i];
        }
        return xx == 0 ? 0 : 1 - 2 * xy / xx;
    }
}
