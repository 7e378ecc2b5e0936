using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Moe.MoeTestData;

namespace DeepKernels.Tests.Moe;

public class MoeLayerTests
{
    private sealed class Layer : IDisposable
    {
        public required MoeLayerConfig Config;
        public required MoeLayerWeights Weights;
        public required double[] GateUp, Down, SharedGateUp, SharedDown;
        public required List<TensorBuffer> Buffers;

        public void Dispose()
        {
            foreach (var b in Buffers) b.Dispose();
        }
    }

    private static Layer Build(Backend backend, MoeLayerConfig c, int seed)
    {
        int e = c.NumExperts, h = c.Hidden, i = c.Intermediate, s = c.SharedIntermediate;
        var buffers = new List<TensorBuffer>();
        TensorView Up<T>(T[] data, DType dtype, params long[] shape) where T : unmanaged
        {
            var b = backend.Upload<T>(data, dtype, shape);
            buffers.Add(b);
            return b.View;
        }
        (TensorView W, TensorView S, double[] Ref) Weight(int groups, int n, int k, int sd, bool flat)
        {
            var (q, scales) = QuantizeWeights(Random(groups * n * k, sd, 0.1), groups, n, k);
            long nb = (n + 127) / 128, kb = (k + 127) / 128;
            var wv = flat ? Up(q, DType.Float8E4M3, n, k) : Up(q, DType.Float8E4M3, groups, n, k);
            var sv = flat ? Up(scales, DType.Float32, nb, kb) : Up(scales, DType.Float32, groups, nb, kb);
            return (wv, sv, DequantizeWeights(q, scales, groups, n, k));
        }
        var gu = Weight(e, 2 * i, h, seed, false);
        var dn = Weight(e, h, i, seed + 1, false);
        var sgu = s > 0 ? Weight(1, 2 * s, h, seed + 2, true) : default;
        var sdn = s > 0 ? Weight(1, h, s, seed + 3, true) : default;
        var weights = s > 0
            ? new MoeLayerWeights(c, gu.W, gu.S, dn.W, dn.S, sgu.W, sgu.S, sdn.W, sdn.S)
            : new MoeLayerWeights(c, gu.W, gu.S, dn.W, dn.S);
        return new Layer { Config = c, Weights = weights, GateUp = gu.Ref, Down = dn.Ref, SharedGateUp = sgu.Ref ?? [], SharedDown = sdn.Ref ?? [], Buffers = buffers };
    }

    private static double[] QuantDequant(double[] v)
    {
        var (q, s) = QuantizeActivations(v.Select(d => (float)d).ToArray(), v.Length);
        return DequantizeActivations(q, s, v.Length);
    }

    /// <summary>One expert MLP in float64 from dequantized weights, with the FP8 activation steps of the contract.</summary>
    private static double[] Expert(double[] xq, double[] gateUp, double[] down, int g, int h, int inter)
    {
        var gu = MatVec(xq, gateUp, g, 2 * inter, h);
        var hidden = new double[inter];
        for (int j = 0; j < inter; j++) hidden[j] = gu[j] / (1 + Math.Exp(-gu[j])) * gu[inter + j];
        return MatVec(QuantDequant(hidden), down, g, h, inter);
    }

    private static double[] Reference(Layer layer, float[] x, int[] ids, float[] w)
    {
        var c = layer.Config;
        int h = c.Hidden, k = c.TopK, tokens = x.Length / h;
        var result = new double[tokens * h];
        for (int t = 0; t < tokens; t++)
        {
            var xq = QuantDequant(x.Skip(t * h).Take(h).Select(v => (double)v).ToArray());
            var sum = new double[h];
            for (int j = 0; j < k; j++)
            {
                int e = ids[t * k + j];
                if (e < 0) continue;
                var y = Expert(xq, layer.GateUp, layer.Down, e, h, c.Intermediate);
                for (int n = 0; n < h; n++) sum[n] += w[t * k + j] * y[n];
            }
            if (c.SharedIntermediate > 0)
            {
                var y = Expert(xq, layer.SharedGateUp, layer.SharedDown, 0, h, c.SharedIntermediate);
                for (int n = 0; n < h; n++) sum[n] += y[n];
            }
            sum.CopyTo(result, t * h);
        }
        return result;
    }

    private static (int[] Ids, float[] W) Routing(int tokens, int k, int e, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[tokens * k];
        var w = new float[tokens * k];
        for (int t = 0; t < tokens; t++)
        {
            var chosen = Enumerable.Range(0, e).OrderBy(_ => rng.Next()).Take(k).ToArray();
            for (int j = 0; j < k; j++)
            {
                ids[t * k + j] = chosen[j];
                w[t * k + j] = (float)(rng.NextDouble() + 0.1);
            }
        }
        if (tokens > 3) ids[3 * k + 1] = -1; // a dropped slot
        return (ids, w);
    }

    private static readonly MoeLayerConfig SmallConfig = new() { Hidden = 256, Intermediate = 192, NumExperts = 6, TopK = 2, SharedIntermediate = 128 };

    [TestCase(1, 0)]
    [TestCase(13, 0)]
    [TestCase(40, 128)]
    public void MatchesFloat64PerTokenReference(int tokens, int alignment)
    {
        var backend = new CpuBackend();
        var config = SmallConfig with { Alignment = alignment };
        using var layer = Build(backend, config, 17);
        var x = Random(tokens * config.Hidden, tokens, 2);
        var (ids, w) = Routing(tokens, config.TopK, config.NumExperts, tokens + 1);
        using var xBuf = backend.Upload<float>(x, DType.Float32, tokens, config.Hidden);
        using var idBuf = backend.Upload<int>(ids, DType.Int32, tokens, config.TopK);
        using var wBuf = backend.Upload<float>(w, DType.Float32, tokens, config.TopK);
        using var outBuf = backend.Allocate(DType.Float32, tokens, config.Hidden);
        using var ws = MoeWorkspace.Create(backend, config, 64);
        MoeFeedForward.Forward(backend, layer.Weights, xBuf, idBuf, wBuf, ws, outBuf);
        var got = backend.Download<float>(outBuf).Select(v => (double)v).ToArray();
        var expected = Reference(layer, x, ids, w);
        double diff = CalcDiff(got, expected);
        TestContext.Out.WriteLine($"T={tokens} calc_diff={diff:E2}");
        Assert.That(diff, Is.LessThan(1e-4));

        // Without the routed part (all slots dropped) the output is the shared expert alone; with a
        // different routing it changes: the test sees both halves.
        using var dropped = backend.Upload<int>(Enumerable.Repeat(-1, ids.Length).ToArray(), DType.Int32, tokens, config.TopK);
        MoeFeedForward.Forward(backend, layer.Weights, xBuf, dropped, wBuf, ws, outBuf);
        var sharedOnly = backend.Download<float>(outBuf).Select(v => (double)v).ToArray();
        Assert.That(CalcDiff(sharedOnly, Reference(layer, x, Enumerable.Repeat(-1, ids.Length).ToArray(), w)), Is.LessThan(1e-4));
        Assert.That(CalcDiff(sharedOnly, expected), Is.GreaterThan(1e-2));
    }

    [Test]
    public void RoutedOverloadEqualsRouteThenForward()
    {
        var backend = new CpuBackend();
        var config = SmallConfig with { NumExperts = 8, TopK = 3 };
        var router = new MoeRouterConfig { NGroup = 4, TopKGroup = 2, TopK = 3, RoutedScalingFactor = 2.5f };
        using var layer = Build(backend, config, 12);
        const int tokens = 11;
        var logits = Random(tokens * 8, 4, 3);
        float[] bias = [0.1f, -0.2f, 0, 0.3f, 0, 0, -0.1f, 0.2f];
        var ids = new int[tokens * 3];
        var w = new float[tokens * 3];
        MoeRouting.Route(logits, 8, bias, router, ids, w);
        var x = Random(tokens * config.Hidden, 8, 1);
        using var xBuf = backend.Upload<float>(x, DType.Float32, tokens, config.Hidden);
        using var logitBuf = backend.Upload<float>(logits, DType.Float32, tokens, 8);
        using var biasBuf = backend.Upload<float>(bias, DType.Float32, 8);
        using var outBuf = backend.Allocate(DType.Float32, tokens, config.Hidden);
        using var ws = MoeWorkspace.Create(backend, config, 16);
        MoeFeedForward.Forward(backend, layer.Weights, router, logitBuf, biasBuf.View, xBuf, ws, outBuf);
        var got = backend.Download<float>(outBuf).Select(v => (double)v).ToArray();
        Assert.That(CalcDiff(got, Reference(layer, x, ids, w)), Is.LessThan(1e-4));
        Assert.Throws<ArgumentException>(() => MoeFeedForward.Forward(backend, layer.Weights, router with { TopK = 2 }, logitBuf, biasBuf.View, xBuf, ws, outBuf));
    }

    [Test]
    public void BFloat16InOutAndNoSharedExpert()
    {
        var backend = new CpuBackend();
        var config = SmallConfig with { SharedIntermediate = 0, Intermediate = 128, NumExperts = 4, TopK = 3 };
        using var layer = Build(backend, config, 5);
        const int tokens = 9;
        var x = Random(tokens * config.Hidden, 1, 2).Select(v => BFloat16.ToSingle(BFloat16.ToRaw(v))).ToArray();
        var (ids, w) = Routing(tokens, config.TopK, config.NumExperts, 2);
        using var xBuf = backend.Upload<ushort>(x.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, tokens, config.Hidden);
        using var idBuf = backend.Upload<int>(ids, DType.Int32, tokens, config.TopK);
        using var wBuf = backend.Upload<float>(w, DType.Float32, tokens, config.TopK);
        using var outBuf = backend.Allocate(DType.BFloat16, tokens, config.Hidden);
        using var ws = MoeWorkspace.Create(backend, config, tokens);
        MoeFeedForward.Forward(backend, layer.Weights, xBuf, idBuf, wBuf, ws, outBuf);
        var got = backend.Download<ushort>(outBuf).Select(v => (double)BFloat16.ToSingle(v)).ToArray();
        Assert.That(CalcDiff(got, Reference(layer, x, ids, w)), Is.LessThan(1e-4));
    }

    // One thread isolates our own allocations from the thread pool's bookkeeping, which the
    // parallel backend adds (a few KB per call, varying with scheduling, never with T).
    [TestCase(1, 8 * 1024)]
    [TestCase(0, 256 * 1024)]
    public void NoAllocationGrowthWithTokens(int threads, long limit)
    {
        var backend = new CpuBackend(threads);
        var config = SmallConfig;
        using var layer = Build(backend, config, 3);
        const int maxTokens = 96;
        using var ws = MoeWorkspace.Create(backend, config, maxTokens);
        var x = Random(maxTokens * config.Hidden, 9, 1);
        var (ids, w) = Routing(maxTokens, config.TopK, config.NumExperts, 4);
        using var xBuf = backend.Upload<float>(x, DType.Float32, maxTokens, config.Hidden);
        using var idBuf = backend.Upload<int>(ids, DType.Int32, maxTokens, config.TopK);
        using var wBuf = backend.Upload<float>(w, DType.Float32, maxTokens, config.TopK);
        using var outBuf = backend.Allocate(DType.Float32, maxTokens, config.Hidden);

        long PerCall(int tokens)
        {
            var xv = xBuf.View.SliceRows(0, tokens);
            var iv = idBuf.View.SliceRows(0, tokens);
            var wv = wBuf.View.SliceRows(0, tokens);
            var ov = outBuf.View.SliceRows(0, tokens);
            for (int i = 0; i < 3; i++) MoeFeedForward.Forward(backend, layer.Weights, xv, iv, wv, ws, ov); // warm-up
            // With one thread all the work is on this thread, so count only its allocations
            // (the test runner's own threads allocate too); otherwise count the whole process.
            Func<long> allocated = threads == 1 ? GC.GetAllocatedBytesForCurrentThread : () => GC.GetTotalAllocatedBytes(precise: true);
            long before = allocated();
            const int calls = 8;
            for (int i = 0; i < calls; i++) MoeFeedForward.Forward(backend, layer.Weights, xv, iv, wv, ws, ov);
            return (allocated() - before) / calls;
        }
        long one = PerCall(1), half = PerCall(maxTokens / 2), many = PerCall(maxTokens);
        TestContext.Out.WriteLine($"bytes per call: T=1 {one}, T={maxTokens / 2} {half}, T={maxTokens} {many}");
        // Parallel loops cost a few small objects per call and per active expert (at most E), never per
        // token (T = 96 moves ~200 KB of activations through the workspace).
        Assert.That(one, Is.LessThan(limit));
        Assert.That(many, Is.LessThan(limit));
        // The dense GEMM core allocates a small scratch handle per call, i.e. per active expert:
        // T = 1 touches 2 of the 6 experts, T = 48 and T = 96 all of them and must cost the same.
        if (threads == 1)
        {
            Assert.That(many, Is.EqualTo(half).Within(256), "no growth with T");
            Assert.That(one, Is.LessThanOrEqualTo(many));
        }
    }

    [Test]
    public void BadInputThrowsBeforeWork()
    {
        var backend = new CpuBackend();
        var config = SmallConfig;
        using var layer = Build(backend, config, 1);
        using var ws = MoeWorkspace.Create(backend, config, 4);
        using var x = backend.Allocate(DType.Float32, 4, config.Hidden);
        backend.Zero(x);
        using var w = backend.Allocate(DType.Float32, 4, config.TopK);
        using var output = backend.Upload<float>(Enumerable.Repeat(7f, 4 * config.Hidden).ToArray(), DType.Float32, 4, config.Hidden);
        using var badIds = backend.Upload<int>([0, 1, 2, 6, 0, 1, 0, 1], DType.Int32, 4, 2);
        using var negIds = backend.Upload<int>([0, 1, 2, -2, 0, 1, 0, 1], DType.Int32, 4, 2);
        using var okIds = backend.Upload<int>([0, 1, 2, 3, 0, 1, 0, 1], DType.Int32, 4, 2);
        Assert.Throws<ArgumentException>(() => MoeFeedForward.Forward(backend, layer.Weights, x, badIds, w, ws, output), "id >= E");
        Assert.Throws<ArgumentException>(() => MoeFeedForward.Forward(backend, layer.Weights, x, negIds, w, ws, output), "id < -1");
        using var small = MoeWorkspace.Create(backend, config, 2);
        Assert.Throws<ArgumentException>(() => MoeFeedForward.Forward(backend, layer.Weights, x, okIds, w, small, output), "T > MaxTokens");
        using var other = MoeWorkspace.Create(backend, config with { Intermediate = 256 }, 4);
        Assert.Throws<ArgumentException>(() => MoeFeedForward.Forward(backend, layer.Weights, x, okIds, w, other, output), "workspace of another shape");
        Assert.That(backend.Download<float>(output), Is.All.EqualTo(7f));

        Assert.Throws<ArgumentException>(() => new MoeLayerWeights(config with { NumExperts = 5 }, layer.Weights.GateUp, layer.Weights.GateUpScales, layer.Weights.Down, layer.Weights.DownScales));
        using var nanScales = backend.Upload<float>(Enumerable.Repeat(float.NaN, 6 * 3 * 2).ToArray(), DType.Float32, 6, 3, 2);
        Assert.Throws<ArgumentException>(() => new MoeLayerWeights(config with { SharedIntermediate = 0 }, layer.Weights.GateUp, nanScales, layer.Weights.Down, layer.Weights.DownScales));
        Assert.Throws<ArgumentException>(() => new MoeLayerWeights(config, layer.Weights.GateUp, layer.Weights.GateUpScales, layer.Weights.Down, layer.Weights.DownScales), "missing shared expert");
        Assert.Throws<ArgumentException>(() => MoeWorkspace.Create(backend, config with { TopK = 7 }, 4));
    }
}
