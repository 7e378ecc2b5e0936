using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Formats;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>The CUDA MoE layer and its SiLU(gate)*up FP8 kernel against the CPU backend.</summary>
[Category("Cuda")]
public class CudaMoeLayerTests
{
    // ---- dk_silu_mul_quant_fp8 vs CpuBackend.SiluMulQuantize ----

    /// <summary>
    /// Gate/up rows with every kind of group: random, all zero, a tiny amax (scale clamps at
    /// 1e-4/448), large values that overflow to +-inf in up*g, NaNs, and negative gates (where the
    /// sigmoid's last bit decides the group's scale).
    /// </summary>
    private static float[] ActivationRows(int rows, int inter, Random rng)
    {
        var gu = Gaussian(rows * 2 * inter, rng, 3.0);
        int groups = (inter + 127) / 128;
        for (int r = 0; r < rows; r++)
        {
            int g = rng.Next(groups), start = r * 2 * inter + g * 128, end = Math.Min(start + 128, r * 2 * inter + inter);
            switch (r % 6)
            {
                case 0: for (int i = start; i < end; i++) gu[i] = 0; break;                       // zero group
                case 1: gu[start + 3] = float.NaN; gu[start + inter + 7] = float.NaN; break;       // NaN gate and NaN up
                case 2: for (int i = start; i < end; i++) gu[i] *= 1e-6f; break;                  // amax below 1e-4
                case 3: gu[start + 1] = 3e38f; gu[start + inter + 1] = 2f; gu[start + 2] = -80f; break; // inf product, saturated SiLU
                case 4: for (int i = start; i < end; i++) gu[i] = -Math.Abs(gu[i]); break;        // sigmoid far from 1 at the group max
                default: break;
            }
        }
        return gu;
    }

    private static (byte[] Q, float[] Scales) RunSiluQuant(Backend backend, float[] gateUp, int[]? mIndices, int rows, int inter, bool bf16)
    {
        int groups = (inter + 127) / 128;
        using var gu = bf16 ? Put(backend, gateUp.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, rows, 2 * inter)
                            : Put(backend, gateUp, DType.Float32, rows, 2 * inter);
        using var mi = mIndices is null ? null : Put(backend, mIndices, DType.Int32, rows);
        // Sentinels: rows that must be skipped keep them.
        using var q = Put(backend, Enumerable.Repeat((byte)0x55, rows * inter).ToArray(), DType.Float8E4M3, rows, inter);
        using var s = Put(backend, Enumerable.Repeat(-7f, rows * groups).ToArray(), DType.Float32, rows, groups);
        if (backend is CpuBackend cpu)
            cpu.SiluMulQuantize(gu, mi?.View, rows, inter, q, s);
        else
            ((Backends.Cuda.CudaBackend)backend).LaunchSiluMulQuant(gu, mi?.View, rows, inter, q, s);
        backend.Synchronize();
        return (backend.Download<byte>(q), backend.Download<float>(s));
    }

    [TestCase(37, 256, false)]
    [TestCase(11, 448, false)]
    [TestCase(9, 384, true)]
    public void SiluMulQuantMatchesCpuBitForBit(int rows, int inter, bool bf16)
    {
        var cuda = CudaTestBackends.Get();
        var rng = new Random(rows * 31 + inter);
        var gu = ActivationRows(rows, inter, rng);
        // The CPU path reads FP32: give it the BF16-rounded values the kernel sees.
        var cpuInput = bf16 ? gu.Select(v => BFloat16.ToSingle(BFloat16.ToRaw(v))).ToArray() : gu;
        var mIndices = Enumerable.Range(0, rows).Select(r => r % 4 == 2 ? -1 : r % 3).ToArray();
        var expected = RunSiluQuant(CpuBackend.Default, cpuInput, mIndices, rows, inter, false);
        var actual = RunSiluQuant(cuda, gu, mIndices, rows, inter, bf16);

        int groups = (inter + 127) / 128;
        for (int i = 0; i < expected.Scales.Length; i++)
        {
            Assert.That(BitConverter.SingleToInt32Bits(actual.Scales[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(expected.Scales[i])),
                $"scale[{i / groups}, {i % groups}]: {actual.Scales[i]} vs {expected.Scales[i]}");
        }
        int nanCodes = 0, zeroGroups = 0;
        for (int i = 0; i < expected.Q.Length; i++)
        {
            byte e = expected.Q[i], a = actual.Q[i];
            // A NaN's sign is not specified (the GPU makes canonical NaNs): NaN codes compare without it.
            if ((e & 0x7F) == 0x7F)
            {
                nanCodes++;
                Assert.That(a & 0x7F, Is.EqualTo(0x7F), $"q[{i / inter}, {i % inter}] should be NaN");
            }
            else
                Assert.That(a, Is.EqualTo(e), $"q[{i / inter}, {i % inter}]");
        }
        for (int i = 0; i < expected.Scales.Length; i++) zeroGroups += expected.Scales[i] == 1e-4f / 448f ? 1 : 0;
        Assert.That(nanCodes, Is.GreaterThan(0), "the data has NaN codes");
        Assert.That(zeroGroups, Is.GreaterThan(0), "the data has zero groups");
        // Skipped rows keep the sentinels on both sides.
        for (int r = 0; r < rows; r++)
        {
            if (mIndices[r] >= 0) continue;
            Assert.That(actual.Q.Skip(r * inter).Take(inter), Is.All.EqualTo((byte)0x55), $"padding row {r} codes");
            Assert.That(actual.Scales.Skip(r * groups).Take(groups), Is.All.EqualTo(-7f), $"padding row {r} scales");
        }
    }

    [Test]
    public void SiluMulQuantWithoutIndicesQuantizesEveryRow()
    {
        var cuda = CudaTestBackends.Get();
        var gu = ActivationRows(6, 256, new Random(5));
        var expected = RunSiluQuant(CpuBackend.Default, gu, null, 6, 256, false);
        var actual = RunSiluQuant(cuda, gu, null, 6, 256, false);
        Assert.That(actual.Scales, Is.EqualTo(expected.Scales));
        Assert.That(actual.Q.Select(b => (b & 0x7F) == 0x7F ? 0x7F : b), Is.EqualTo(expected.Q.Select(b => (b & 0x7F) == 0x7F ? 0x7F : b)));
    }

    // ---- the layer ----

    private sealed class Layer(List<TensorBuffer> buffers, MoeLayerWeights weights) : IDisposable
    {
        public MoeLayerWeights Weights { get; } = weights;

        public void Dispose()
        {
            foreach (var b in buffers) b.Dispose();
        }
    }

    /// <summary>Random block-scaled FP8 weights for <paramref name="c"/>, the same codes on any backend.</summary>
    private static Layer BuildLayer(Backend backend, MoeLayerConfig c, int seed)
    {
        var rng = new Random(seed);
        var buffers = new List<TensorBuffer>();
        TensorView Up<T>(T[] data, DType dtype, params long[] shape) where T : unmanaged
        {
            var b = backend.Upload<T>(data, dtype, shape);
            buffers.Add(b);
            return b.View;
        }
        (TensorView W, TensorView S) Weight(int groups, int n, int k, bool flat)
        {
            long nb = (n + 127) / 128, kb = (k + 127) / 128;
            var codes = Fp8Codes(groups * n * k, new Random(rng.Next()));
            // Scales ~ 1/sqrt(k) keep the activations in a sensible range through both GEMMs.
            var scales = Scales((int)(groups * nb * kb), new Random(rng.Next())).Select(s => s * 0.05f / MathF.Sqrt(k)).ToArray();
            return flat ? (Up(codes, DType.Float8E4M3, n, k), Up(scales, DType.Float32, nb, kb))
                        : (Up(codes, DType.Float8E4M3, groups, n, k), Up(scales, DType.Float32, groups, nb, kb));
        }
        int e = c.NumExperts, h = c.Hidden, i = c.Intermediate, s = c.SharedIntermediate;
        var gu = Weight(e, 2 * i, h, false);
        var dn = Weight(e, h, i, false);
        if (s == 0) return new Layer(buffers, new MoeLayerWeights(c, gu.W, gu.S, dn.W, dn.S));
        var sgu = Weight(1, 2 * s, h, true);
        var sdn = Weight(1, h, s, true);
        return new Layer(buffers, new MoeLayerWeights(c, gu.W, gu.S, dn.W, dn.S, sgu.W, sgu.S, sdn.W, sdn.S));
    }

    private static (int[] Ids, float[] Weights) Routing(int tokens, int k, int e, Random rng)
    {
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
        if (tokens > 3) ids[3 * k + k - 1] = -1; // a dropped slot
        return (ids, w);
    }

    private static float[] Forward(Backend backend, Layer layer, MoeWorkspace ws, float[] x, int[] ids, float[] w, int tokens, DType io)
    {
        var c = layer.Weights.Config;
        using var xb = io == DType.Float32 ? Put(backend, x, DType.Float32, tokens, c.Hidden)
                                           : Put(backend, x.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, tokens, c.Hidden);
        using var idb = Put(backend, ids, DType.Int32, tokens, c.TopK);
        using var wb = Put(backend, w, DType.Float32, tokens, c.TopK);
        using var ob = backend.Allocate(io, tokens, c.Hidden);
        MoeFeedForward.Forward(backend, layer.Weights, xb, idb, wb, ws, ob);
        backend.Synchronize();
        return ReadFloats(backend, ob);
    }

    private static void CompareLayer(MoeLayerConfig config, int[] tokenCounts, DType io, int seed)
    {
        var cuda = CudaTestBackends.Get();
        var cpu = CpuBackend.Default;
        using var cpuLayer = BuildLayer(cpu, config, seed);
        using var cudaLayer = BuildLayer(cuda, config, seed);
        int maxTokens = tokenCounts.Max();
        using var cpuWs = MoeWorkspace.Create(cpu, config, maxTokens);
        using var cudaWs = MoeWorkspace.Create(cuda, config, maxTokens);
        var rng = new Random(seed + 1);
        // One workspace for every call: a smaller T after a larger one must not see stale rows.
        foreach (int tokens in tokenCounts)
        {
            var x = Gaussian(tokens * config.Hidden, rng, 2.0);
            var (ids, w) = Routing(tokens, config.TopK, config.NumExperts, rng);
            var expected = Forward(cpu, cpuLayer, cpuWs, x, ids, w, tokens, io);
            var actual = Forward(cuda, cudaLayer, cudaWs, x, ids, w, tokens, io);
            AssertAllFinite(actual, "cuda output");
            double diff = CalcDiff(actual, expected);
            TestContext.Out.WriteLine($"T={tokens} {config} io={io}: calc_diff={diff:E2}");
            Assert.That(diff, Is.LessThan(1e-3), $"T = {tokens}");
            Assert.That(expected.Select(Math.Abs).Max(), Is.GreaterThan(1e-3f), "the reference output is not trivially zero");
        }
    }

    [Test]
    public void LayerWithSharedExpertMatchesCpu() =>
        CompareLayer(new MoeLayerConfig { Hidden = 256, Intermediate = 256, NumExperts = 4, TopK = 2, SharedIntermediate = 256 }, [13, 1], DType.Float32, 3);

    [Test]
    public void LayerWithoutSharedExpertBFloat16MatchesCpu() =>
        CompareLayer(new MoeLayerConfig { Hidden = 384, Intermediate = 512, NumExperts = 3, TopK = 3 }, [1, 13], DType.BFloat16, 7);

    // Alignment 1: segments share GEMM row tiles and there are no padding rows to skip.
    [Test]
    public void LayerWithUnpaddedSegmentsMatchesCpu() =>
        CompareLayer(new MoeLayerConfig { Hidden = 256, Intermediate = 256, NumExperts = 4, TopK = 2, Alignment = 1 }, [13], DType.Float32, 11);

    [Test]
    public void LayerWithAllSlotsDroppedIsTheSharedExpert()
    {
        var cuda = CudaTestBackends.Get();
        var config = new MoeLayerConfig { Hidden = 256, Intermediate = 256, NumExperts = 4, TopK = 2, SharedIntermediate = 256 };
        using var cpuLayer = BuildLayer(CpuBackend.Default, config, 9);
        using var cudaLayer = BuildLayer(cuda, config, 9);
        using var cpuWs = MoeWorkspace.Create(CpuBackend.Default, config, 2);
        using var cudaWs = MoeWorkspace.Create(cuda, config, 2);
        var x = Gaussian(2 * config.Hidden, new Random(2), 2.0);
        int[] ids = [-1, -1, -1, -1];
        float[] w = [0.5f, 0.5f, 0.5f, 0.5f];
        var expected = Forward(CpuBackend.Default, cpuLayer, cpuWs, x, ids, w, 2, DType.Float32);
        var actual = Forward(cuda, cudaLayer, cudaWs, x, ids, w, 2, DType.Float32);
        Assert.That(CalcDiff(actual, expected), Is.LessThan(1e-3));
        Assert.That(expected.Select(Math.Abs).Max(), Is.GreaterThan(1e-3f));
    }

    [Test]
    public void LayerWithFewActiveExpertsRunsOverTrailingPaddingTiles()
    {
        // Experts 1 and 5 of 8 only: 256 rows used, but the device layout's bound is 1024 rows, so
        // the GEMMs and the SiLU kernel run over 6 all-padding row tiles that must be skipped.
        var cuda = CudaTestBackends.Get();
        var config = new MoeLayerConfig { Hidden = 256, Intermediate = 256, NumExperts = 8, TopK = 2 };
        const int tokens = 13;
        Assert.That(CudaBackend.DeviceContiguousRows(tokens, 2, 8, 128), Is.EqualTo(1024));
        using var cpuLayer = BuildLayer(CpuBackend.Default, config, 31);
        using var cudaLayer = BuildLayer(cuda, config, 31);
        using var cpuWs = MoeWorkspace.Create(CpuBackend.Default, config, tokens);
        using var cudaWs = MoeWorkspace.Create(cuda, config, tokens);
        var rng = new Random(6);
        var x = Gaussian(tokens * config.Hidden, rng, 2.0);
        var ids = Enumerable.Range(0, tokens * 2).Select(i => i % 2 == 0 ? 1 : 5).ToArray();
        var w = Enumerable.Range(0, tokens * 2).Select(_ => (float)(rng.NextDouble() + 0.1)).ToArray();
        var expected = Forward(CpuBackend.Default, cpuLayer, cpuWs, x, ids, w, tokens, DType.Float32);
        var actual = Forward(cuda, cudaLayer, cudaWs, x, ids, w, tokens, DType.Float32);
        AssertAllFinite(actual, "cuda output");
        Assert.That(CalcDiff(actual, expected), Is.LessThan(1e-3));
        Assert.That(expected.Select(Math.Abs).Max(), Is.GreaterThan(1e-3f));
    }

    [Test]
    public void LayerWithABadDeviceIdDropsTheSlotAndReportsIt()
    {
        var cuda = CudaTestBackends.Get();
        cuda.ThrowIfDeviceRoutingError();
        var config = new MoeLayerConfig { Hidden = 256, Intermediate = 256, NumExperts = 4, TopK = 2, SharedIntermediate = 256 };
        const int tokens = 5;
        using var cpuLayer = BuildLayer(CpuBackend.Default, config, 41);
        using var cudaLayer = BuildLayer(cuda, config, 41);
        using var cpuWs = MoeWorkspace.Create(CpuBackend.Default, config, tokens);
        using var cudaWs = MoeWorkspace.Create(cuda, config, tokens);
        var rng = new Random(12);
        var x = Gaussian(tokens * config.Hidden, rng, 2.0);
        var (ids, w) = Routing(tokens, config.TopK, config.NumExperts, rng);
        var dropped = (int[])ids.Clone();
        dropped[5] = -1;
        var bad = (int[])ids.Clone();
        bad[5] = 4; // token 2, slot 1: one past the last expert
        var expected = Forward(CpuBackend.Default, cpuLayer, cpuWs, x, dropped, w, tokens, DType.Float32);
        var actual = Forward(cuda, cudaLayer, cudaWs, x, bad, w, tokens, DType.Float32);
        Assert.That(CalcDiff(actual, expected), Is.LessThan(1e-3), "the bad slot is dropped, the rest is computed");
        var ex = Assert.Throws<ArgumentException>(cuda.ThrowIfDeviceRoutingError);
        Assert.That(ex!.Message, Does.Contain("got 4 at flat index 5"));
        Assert.Throws<ArgumentException>(() => Forward(CpuBackend.Default, cpuLayer, cpuWs, x, bad, w, tokens, DType.Float32), "host ids are checked up front");
    }

    [Test]
    public void LayerCallKeepsRoutingOnTheDevice()
    {
        // The same emulator or GPU behind a driver that counts transfers and synchronizations.
        var shared = CudaTestBackends.Get();
        if (shared.Driver is DeepKernels.Cuda.Emulation.EmulatorDriver && shared.UsesSm90Gemm)
            Assert.Ignore("The emulated Hopper grouped GEMM runs only on the EmulatorDriver itself, not behind a wrapping driver.");
        var driver = new CountingCudaDriver(shared.Driver);
        Assert.That(CudaBackend.TryCreate(driver, 0, out var created, out string reason), Is.True, reason);
        using var cuda = created!;
        var config = new MoeLayerConfig { Hidden = 256, Intermediate = 256, NumExperts = 4, TopK = 2, SharedIntermediate = 256 };
        const int tokens = 13;
        using var cpuLayer = BuildLayer(CpuBackend.Default, config, 21);
        using var cudaLayer = BuildLayer(cuda, config, 21);
        using var cpuWs = MoeWorkspace.Create(CpuBackend.Default, config, tokens);
        using var ws = MoeWorkspace.Create(cuda, config, tokens);
        var rng = new Random(4);
        var x = Gaussian(tokens * config.Hidden, rng, 2.0);
        var (ids, w) = Routing(tokens, config.TopK, config.NumExperts, rng);
        var expected = Forward(CpuBackend.Default, cpuLayer, cpuWs, x, ids, w, tokens, DType.Float32);
        using var xb = Put(cuda, x, DType.Float32, tokens, config.Hidden);
        using var idb = Put(cuda, ids, DType.Int32, tokens, config.TopK);
        using var wb = Put(cuda, w, DType.Float32, tokens, config.TopK);
        using var ob = cuda.Allocate(DType.Float32, tokens, config.Hidden);
        MoeFeedForward.Forward(cuda, cudaLayer.Weights, xb, idb, wb, ws, ob); // warm-up: lazily allocated helpers
        cuda.Zero(ob);
        driver.Reset();
        MoeFeedForward.Forward(cuda, cudaLayer.Weights, xb, idb, wb, ws, ob);
        Assert.That(driver.DeviceToHostCopies, Is.Zero, "device-to-host copies during a MoE layer call");
        Assert.That(driver.StreamSynchronizations, Is.Zero, "stream synchronizations during a MoE layer call");
        Assert.That(driver.HostToDeviceCopies, Is.Zero, "host-to-device copies during a MoE layer call");
        Assert.That(driver.Allocations, Is.Zero, "device allocations during a MoE layer call after warm-up");
        Assert.That(driver.Launches, Is.GreaterThan(5));
        cuda.ThrowIfDeviceRoutingError();
        Assert.That(CalcDiff(ReadFloats(cuda, ob), expected), Is.LessThan(1e-3));

        // Gate + layer in one call: the router's ids go straight from its kernel to the layout kernels.
        var router = new DeepKernels.Ops.MoeRouter.MoeRouterConfig { TopK = config.TopK };
        using var logits = Put(cuda, Gaussian(tokens * config.NumExperts, rng), DType.Float32, tokens, config.NumExperts);
        MoeFeedForward.Forward(cuda, cudaLayer.Weights, router, logits, null, xb, ws, ob);
        driver.Reset();
        MoeFeedForward.Forward(cuda, cudaLayer.Weights, router, logits, null, xb, ws, ob);
        Assert.That(driver.DeviceToHostCopies + driver.StreamSynchronizations + driver.HostToDeviceCopies, Is.Zero, "transfers or syncs in a routed MoE layer call");
        AssertAllFinite(ReadFloats(cuda, ob), "routed layer output");
        Assert.That(driver.DeviceToHostCopies, Is.GreaterThan(0), "the counting driver sees downloads");
    }
}
