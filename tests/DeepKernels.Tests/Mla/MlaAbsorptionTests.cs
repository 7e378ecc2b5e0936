using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.Mla;
using DeepKernels.Ops.MlaDecode;

namespace DeepKernels.Tests.Mla;

public class MlaAbsorptionTests
{
    private const int Nope = 128, Rope = 64, V = 128, Lat = 512, D = 576;

    /// <summary>
    /// The decisive test: absorbed decode (W_UK^T q_nope against cached latents, then W_UV on
    /// the latent output) equals plain multi-head attention on keys and values decompressed
    /// per head from the latents with kv_b_proj, computed in float64.
    /// </summary>
    [TestCase(LatentCacheLayout.BFloat16, 1, false)]
    [TestCase(LatentCacheLayout.BFloat16, 2, true)]
    [TestCase(LatentCacheLayout.Fp8, 1, false)]
    public void AbsorbedDecodeEqualsNaiveDecompressedAttention(LatentCacheLayout layout, int sQ, bool causal)
    {
        const int heads = 4;
        const float scale = 0.1352338f;
        int[] lens = [1, 37, 70, 0];
        var rng = new Random(100 + sQ);
        var kvB = MlaReference.Random(heads * (Nope + V) * Lat, rng, 1 / Math.Sqrt(Lat) * 1.7);
        using var cache = new PagedLatentCache(CpuBackend.Default, 12, 32, layout);
        var seqs = new int[lens.Length];
        for (int b = 0; b < lens.Length; b++)
        {
            seqs[b] = cache.Allocator.CreateSequence();
            cache.Append(seqs[b], MlaReference.Random(lens[b] * D, rng));
        }
        var kv = seqs.Select(cache.ReadLatents).ToList(); // the stored (rounded) latents
        int maxPages = cache.Allocator.MaxPages(seqs);
        var table = new int[lens.Length * maxPages];
        var got = new int[lens.Length];
        cache.Allocator.ExportBlockTable(seqs, maxPages, table, got);

        int rows = lens.Length * sQ * heads;
        var qNope = MlaReference.Random(rows * Nope, rng);
        var qPe = MlaReference.Random(rows * Rope, rng);

        // Absorbed path (library).
        var wUk = new float[heads * Nope * Lat];
        var wUv = new float[heads * V * Lat];
        MlaAbsorption.Split(kvB, heads, Nope, V, wUk, wUv);
        var qLatent = new float[rows * Lat];
        MlaAbsorption.AbsorbQuery(qNope, wUk, heads, Nope, qLatent);
        var q = new float[rows * D];
        for (int r = 0; r < rows; r++)
        {
            qLatent.AsSpan(r * Lat, Lat).CopyTo(q.AsSpan(r * D));
            qPe.AsSpan(r * Rope, Rope).CopyTo(q.AsSpan(r * D + Lat));
        }
        var outLatent = new float[rows * Lat];
        var lse = new float[rows];
        MlaDecode.Run(cache, q, lens.Length, sQ, heads, table, lens, scale, causal, outLatent, lse);
        var output = new float[rows * V];
        MlaAbsorption.ApplyValueUp(outLatent, wUv, heads, V, output);

        // Naive path: decompress K and V per head, ordinary softmax attention, float64.
        var expected = new double[rows * V];
        var expectedLse = new double[lens.Length * heads * sQ];
        for (int b = 0; b < lens.Length; b++)
        {
            int len = lens[b];
            for (int h = 0; h < heads; h++)
            {
                int wk = h * (Nope + V) * Lat, wv = wk + Nope * Lat;
                var k = new double[len, Nope + Rope];
                var vals = new double[len, V];
                for (int t = 0; t < len; t++)
                {
                    for (int d = 0; d < Nope; d++)
                    {
                        double sk = 0, sv = 0;
                        for (int c = 0; c < Lat; c++)
                        {
                            sk += (double)kvB[wk + d * Lat + c] * kv[b][t * D + c];
                            sv += (double)kvB[wv + d * Lat + c] * kv[b][t * D + c];
                        }
                        k[t, d] = sk;
                        vals[t, d] = sv;
                    }
                    for (int d = 0; d < Rope; d++) k[t, Nope + d] = kv[b][t * D + Lat + d];
                }
                for (int s = 0; s < sQ; s++)
                {
                    int r = (b * sQ + s) * heads + h;
                    int last = causal ? len - sQ + s : len - 1;
                    if (last < 0)
                    {
                        expectedLse[(b * heads + h) * sQ + s] = double.PositiveInfinity;
                        continue;
                    }
                    var sc = new double[last + 1];
                    for (int t = 0; t <= last; t++)
                    {
                        double dot = 0;
                        for (int d = 0; d < Nope; d++) dot += qNope[r * Nope + d] * k[t, d];
                        for (int d = 0; d < Rope; d++) dot += qPe[r * Rope + d] * k[t, Nope + d];
                        sc[t] = dot * scale;
                    }
                    double max = sc.Max(), sum = sc.Sum(x => Math.Exp(x - max));
                    for (int t = 0; t <= last; t++)
                    {
                        double p = Math.Exp(sc[t] - max) / sum;
                        for (int d = 0; d < V; d++) expected[r * V + d] += p * vals[t, d];
                    }
                    expectedLse[(b * heads + h) * sQ + s] = max + Math.Log(sum);
                }
            }
        }
        var finite = output.Select(x => (double)x).ToArray();
        Assert.That(MlaReference.CalcDiff(finite, expected), Is.LessThan(1e-5), "attention output");
        MlaReference.AssertClose(output, expected, "attention output");
        MlaReference.AssertClose(lse, expectedLse, "lse");
        // The empty sequence (last in the batch) contributes exact zeros.
        Assert.That(output.AsSpan((lens.Length - 1) * sQ * heads * V).ToArray(), Is.All.EqualTo(0f));
    }

    [Test]
    public void SplitTakesRowsPerHeadInOrder()
    {
        const int heads = 2, nope = 2, v = 3;
        var kvB = Enumerable.Range(0, heads * (nope + v) * Lat).Select(i => (float)i).ToArray();
        var wUk = new float[heads * nope * Lat];
        var wUv = new float[heads * v * Lat];
        MlaAbsorption.Split(kvB, heads, nope, v, wUk, wUv);
        Assert.That(wUk[0], Is.EqualTo(0f));
        Assert.That(wUk[nope * Lat], Is.EqualTo((float)(5 * Lat)), "head 1's W_UK starts at row 5");
        Assert.That(wUv[0], Is.EqualTo((float)(2 * Lat)), "head 0's W_UV starts at row 2");
        Assert.That(wUv[v * Lat + 1], Is.EqualTo((float)(7 * Lat + 1)));
        Assert.Throws<ArgumentException>(() => MlaAbsorption.Split(kvB.AsSpan(1), heads, nope, v, wUk, wUv));
    }
}
