using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Model;
using DeepKernels.Model.Weights;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Model;

/// <summary>
/// A plain float64 DeepSeek-V3 forward pass written from the dequantized weights: naive
/// (non-absorbed) MLA that decompresses per-head K and V with kv_b_proj, a hand-written noaux_tc
/// router and SiLU MLPs. It mirrors the two roundings the contract puts in the data path — FP8
/// activation quantization (1x128 groups) at every FP8 projection input and the BF16 latent
/// cache — so it can be compared tightly.
/// </summary>
internal sealed class ModelReference(DeepSeekV3Model model, bool quantizeActivations = true, bool bf16Cache = true)
{
    private readonly Dictionary<Fp8Linear, double[]> _dequantized = [];

    private static double[] Vector(TensorBuffer b) => b.View.DType == DType.BFloat16
        ? b.View.AsSpan<BFloat16>().ToArray().Select(v => (double)(float)v).ToArray()
        : b.View.AsSpan<float>().ToArray().Select(v => (double)v).ToArray();

    private double[] W(Fp8Linear l)
    {
        if (!_dequantized.TryGetValue(l, out var w)) _dequantized[l] = w = l.DequantizeToDouble();
        return w;
    }

    private static double[] QuantizeActivation(double[] x)
    {
        var r = new double[x.Length];
        for (int g = 0; g < x.Length; g += 128)
        {
            int end = Math.Min(x.Length, g + 128);
            double amax = 0;
            for (int i = g; i < end; i++) amax = Math.Max(amax, Math.Abs(x[i]));
            float scale = (float)(Math.Max(amax, 1e-4f) / 448.0);
            for (int i = g; i < end; i++) r[i] = Float8E4M3.ToSingle(Float8E4M3.ToRaw((float)(x[i] / scale))) * (double)scale;
        }
        return r;
    }

    private double[] Linear(Fp8Linear l, double[] x)
    {
        var w = W(l);
        var q = quantizeActivations ? QuantizeActivation(x) : x;
        int n = l.OutFeatures, k = l.InFeatures;
        var y = new double[n];
        for (int j = 0; j < n; j++)
        {
            double s = 0;
            for (int c = 0; c < k; c++) s += w[(long)j * k + c] * q[c];
            y[j] = s;
        }
        return y;
    }

    private static double[] Bf16Linear(Bf16Linear l, double[] x)
    {
        var w = l.Weight.View.AsSpan<BFloat16>();
        int n = l.OutFeatures, k = l.InFeatures;
        var y = new double[n];
        for (int j = 0; j < n; j++)
        {
            double s = 0;
            for (int c = 0; c < k; c++) s += (float)w[j * k + c] * x[c];
            y[j] = s;
        }
        return y;
    }

    private double[] Norm(double[] x, TensorBuffer weight)
    {
        var w = Vector(weight);
        double ss = x.Sum(v => v * v);
        double inv = 1 / Math.Sqrt(ss / x.Length + model.Config.RmsNormEps);
        return x.Select((v, i) => v * inv * w[i]).ToArray();
    }

    private void Rope(double[] x, int offset, int position)
    {
        var f = model.Rope.InverseFrequencies;
        for (int i = 0; i < f.Length; i++)
        {
            double a = position * f[i], c = Math.Cos(a) * model.Rope.Magnitude, s = Math.Sin(a) * model.Rope.Magnitude;
            double x0 = x[offset + 2 * i], x1 = x[offset + 2 * i + 1];
            x[offset + 2 * i] = x0 * c - x1 * s;
            x[offset + 2 * i + 1] = x0 * s + x1 * c;
        }
    }

    private double Bf16(double v) => bf16Cache ? (float)(BFloat16)(float)v : v;

    private double[] Mlp(MlpWeights m, double[] x)
    {
        var g = Linear(m.Gate, x);
        var u = Linear(m.Up, x);
        var a = g.Select((v, i) => v / (1 + Math.Exp(-v)) * u[i]).ToArray();
        return Linear(m.Down, a);
    }

    private double[] Moe(MoeWeights moe, double[] x)
    {
        var c = model.Config;
        int e = c.NRoutedExperts, groups = c.NGroup, per = e / groups;
        var logits = Bf16Linear(moe.Gate, x);
        var s = logits.Select(v => 1 / (1 + Math.Exp(-v))).ToArray();
        var choice = s.Select((v, i) => v + (moe.CorrectionBias.Length > 0 ? moe.CorrectionBias[i] : 0)).ToArray();
        var groupScore = Enumerable.Range(0, groups).Select(g => choice.Skip(g * per).Take(per).OrderByDescending(v => v).Take(2).Sum()).ToArray();
        var keptGroups = Enumerable.Range(0, groups).OrderByDescending(g => groupScore[g]).ThenBy(g => g).Take(c.TopkGroup).ToHashSet();
        var chosen = Enumerable.Range(0, e).Where(i => keptGroups.Contains(i / per)).OrderByDescending(i => choice[i]).ThenBy(i => i).Take(c.NumExpertsPerTok).ToArray();
        double sum = chosen.Sum(i => s[i]);
        var y = moe.Shared is null ? new double[x.Length] : Mlp(moe.Shared, x);
        foreach (int i in chosen)
        {
            double w = s[i] / sum * c.RoutedScalingFactor;
            var o = Mlp(moe.Experts[i], x);
            for (int j = 0; j < y.Length; j++) y[j] += w * o[j];
        }
        return y;
    }

    /// <summary>Logits of the last token of <paramref name="tokens"/> (positions 0..n-1).</summary>
    public double[] LastLogits(int[] tokens)
    {
        var c = model.Config;
        var wts = model.Weights;
        int h = c.HiddenSize, heads = c.NumAttentionHeads, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, vd = c.VHeadDim, lora = c.KvLoraRank, qk = c.QkHeadDim;
        var emb = wts.Embedding.View.AsSpan<BFloat16>().ToArray();
        var xs = tokens.Select(t => Enumerable.Range(0, h).Select(i => (double)(float)emb[t * h + i]).ToArray()).ToArray();
        int n = tokens.Length;
        foreach (var layer in wts.Layers)
        {
            var a = layer.Attention;
            var kvb = W(a.KvBProj);
            var qs = new double[n][];
            var kNope = new double[n][];
            var kPe = new double[n][];
            var vals = new double[n][];
            for (int t = 0; t < n; t++)
            {
                var xn = Norm(xs[t], layer.InputNorm);
                qs[t] = a.QAProj is not null ? Linear(a.QBProj!, Norm(Linear(a.QAProj, xn), a.QANorm!)) : Linear(a.QProj!, xn);
                for (int hh = 0; hh < heads; hh++) Rope(qs[t], hh * qk + nope, t);
                var kv = Linear(a.KvAProj, xn);
                var ckv = Norm(kv.Take(lora).ToArray(), a.KvANorm).Select(Bf16).ToArray();
                var pe = kv.Skip(lora).ToArray();
                Rope(pe, 0, t);
                kPe[t] = pe.Select(Bf16).ToArray();
                // Decompress per-head keys and values from the latent (the non-absorbed form).
                kNope[t] = new double[heads * nope];
                vals[t] = new double[heads * vd];
                for (int hh = 0; hh < heads; hh++)
                {
                    for (int d = 0; d < nope; d++)
                    {
                        double sum = 0;
                        for (int x = 0; x < lora; x++) sum += kvb[((long)hh * (nope + vd) + d) * lora + x] * ckv[x];
                        kNope[t][hh * nope + d] = sum;
                    }
                    for (int d = 0; d < vd; d++)
                    {
                        double sum = 0;
                        for (int x = 0; x < lora; x++) sum += kvb[((long)hh * (nope + vd) + nope + d) * lora + x] * ckv[x];
                        vals[t][hh * vd + d] = sum;
                    }
                }
            }
            for (int t = 0; t < n; t++)
            {
                var attn = new double[heads * vd];
                for (int hh = 0; hh < heads; hh++)
                {
                    var scores = new double[t + 1];
                    for (int j = 0; j <= t; j++)
                    {
                        double sc = 0;
                        for (int d = 0; d < nope; d++) sc += qs[t][hh * qk + d] * kNope[j][hh * nope + d];
                        for (int d = 0; d < rope; d++) sc += qs[t][hh * qk + nope + d] * kPe[j][d];
                        scores[j] = sc * c.SoftmaxScale;
                    }
                    double max = scores.Max();
                    var p = scores.Select(v => Math.Exp(v - max)).ToArray();
                    double z = p.Sum();
                    for (int j = 0; j <= t; j++)
                        for (int d = 0; d < vd; d++) attn[hh * vd + d] += p[j] / z * vals[j][hh * vd + d];
                }
                var o = Linear(a.OProj, attn);
                for (int i = 0; i < h; i++) xs[t][i] += o[i];
            }
            for (int t = 0; t < n; t++)
            {
                var xn = Norm(xs[t], layer.PostAttentionNorm);
                var m = layer.Dense is not null ? Mlp(layer.Dense, xn) : Moe(layer.Moe!, xn);
                for (int i = 0; i < h; i++) xs[t][i] += m[i];
            }
        }
        var last = Norm(xs[n - 1], wts.FinalNorm);
        return Bf16Linear(wts.LmHead!, last);
    }

    /// <summary>DESIGN.md's closeness measure: 1 - 2 sum(xy) / sum(x^2 + y^2).</summary>
    public static double CalcDiff(ReadOnlySpan<float> x, double[] y)
    {
        double xy = 0, xx = 0;
        for (int i = 0; i < y.Length; i++)
        {
            xy += x[i] * y[i];
            xx += (double)x[i] * x[i] + y[i] * y[i];
        }
        return 1 - 2 * xy / xx;
    }
}
