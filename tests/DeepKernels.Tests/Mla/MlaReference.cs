using DeepKernels.Memory.KvCache;

namespace DeepKernels.Tests.Mla;

/// <summary>Plain float64 references and helpers shared by the MLA tests.</summary>
internal static class MlaReference
{
    public const int D = 576, Lat = 512;

    /// <summary>
    /// Absorbed-form decode in float64. kv[b] holds seqlens[b] * 576 latents (as stored in the cache).
    /// Returns out [b, s_q, h, 512] and lse [b, h, s_q] (+inf where no key is visible).
    /// </summary>
    public static (double[] Out, double[] Lse) Decode(float[] q, int batch, int sQ, int hQ, IReadOnlyList<float[]> kv, int[] seqlens, double scale, bool causal)
    {
        var output = new double[batch * sQ * hQ * Lat];
        var lse = new double[batch * hQ * sQ];
        for (int b = 0; b < batch; b++)
        {
            int len = seqlens[b];
            for (int s = 0; s < sQ; s++)
            {
                int last = causal ? len - sQ + s : len - 1;
                for (int h = 0; h < hQ; h++)
                {
                    int qo = ((b * sQ + s) * hQ + h) * D;
                    var scores = new double[Math.Max(0, last + 1)];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= last; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < D; d++) dot += (double)q[qo + d] * kv[b][j * D + d];
                        scores[j] = dot * scale;
                        max = Math.Max(max, scores[j]);
                    }
                    int oo = ((b * sQ + s) * hQ + h) * Lat;
                    if (scores.Length == 0)
                    {
                        lse[(b * hQ + h) * sQ + s] = double.PositiveInfinity;
                        continue;
                    }
                    double sum = 0;
                    for (int j = 0; j < scores.Length; j++) sum += Math.Exp(scores[j] - max);
                    for (int j = 0; j < scores.Length; j++)
                    {
                        double p = Math.Exp(scores[j] - max) / sum;
                        for (int c = 0; c < Lat; c++) output[oo + c] += p * kv[b][j * D + c];
                    }
                    lse[(b * hQ + h) * sQ + s] = max + Math.Log(sum);
                }
            }
        }
        return (output, lse);
    }

    /// <summary>calc_diff(x, y) = 1 - 2 sum(xy) / sum(x^2 + y^2), in float64.</summary>
    public static double CalcDiff(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        double xy = 0, xx = 0;
        for (int i = 0; i < x.Length; i++)
        {
            xy += x[i] * y[i];
            xx += x[i] * x[i] + y[i] * y[i];
        }
        return xx == 0 ? 0 : 1 - 2 * xy / xx;
    }

    /// <summary>The numerics contract: calc_diff &lt; 1e-5, or every element within abs 8e-4 / rel 2/128.</summary>
    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        var a = new List<double>();
        var e = new List<double>();
        for (int i = 0; i < actual.Length; i++)
        {
            if (double.IsInfinity(expected[i]) || float.IsInfinity(actual[i]) || float.IsNaN(actual[i]))
            {
                Assert.That((double)actual[i], Is.EqualTo(expected[i]), $"{what}[{i}]");
                continue;
            }
            a.Add(actual[i]);
            e.Add(expected[i]);
        }
        double diff = CalcDiff(a.ToArray(), e.ToArray());
        if (diff < 1e-5) return;
        for (int i = 0; i < a.Count; i++)
        {
            double err = Math.Abs(a[i] - e[i]);
            Assert.That(err <= 8e-4 || err <= Math.Abs(e[i]) * 2.0 / 128, $"{what}: calc_diff {diff:E2} and element {i}: {a[i]} vs {e[i]}");
        }
    }

    /// <summary>Scrambles the allocator's free list so later allocations get pages in random order.</summary>
    public static void ScrambleFreeList(KvPageAllocator alloc, Random rng)
    {
        int n = alloc.FreePages;
        var ids = new int[n];
        for (int i = 0; i < n; i++)
        {
            ids[i] = alloc.CreateSequence();
            alloc.Append(ids[i], 1);
        }
        rng.Shuffle(ids);
        foreach (int id in ids) alloc.Free(id);
    }

    /// <summary>All bytes of a host tensor, whatever its dtype.</summary>
    public static unsafe Span<byte> Bytes(DeepKernels.Tensors.TensorView view) => new((void*)view.Data, checked((int)view.ByteCount));

    public static float[] Random(int count, Random rng, double amplitude = 1)
    {
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * amplitude);
        return x;
    }
}
