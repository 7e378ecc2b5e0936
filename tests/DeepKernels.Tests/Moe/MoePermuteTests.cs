using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Moe;

public class MoePermuteTests
{
    private static int[] RandomIds(int tokens, int k, int e, int seed, bool dropSome = false)
    {
        var rng = new Random(seed);
        var ids = new int[tokens * k];
        for (int t = 0; t < tokens; t++)
        {
            // Distinct experts per token, as a router produces.
            var chosen = Enumerable.Range(0, e).OrderBy(_ => rng.Next()).Take(k).ToArray();
            for (int j = 0; j < k; j++) ids[t * k + j] = dropSome && rng.Next(10) == 0 ? -1 : chosen[j];
        }
        return ids;
    }

    private static void CheckContiguous(int[] ids, int k, int e, int alignment)
    {
        int tokens = ids.Length / k;
        int capacity = MoePermutation.ContiguousCapacity(tokens, k, e, alignment);
        var offsets = new int[e + 1];
        var mIndices = new int[capacity];
        var rowTokens = new int[capacity];
        var inverse = new int[ids.Length];
        int used = MoePermutation.BuildContiguous(ids, k, e, alignment, offsets, mIndices, rowTokens, inverse);

        Assert.That(used, Is.EqualTo(offsets[e]));
        Assert.That(used, Is.LessThanOrEqualTo(capacity));
        // Segments: aligned, in expert order, exactly as long as the aligned count.
        Assert.That(offsets[0], Is.EqualTo(0));
        for (int x = 0; x < e; x++)
        {
            int count = ids.Count(id => id == x);
            Assert.That(offsets[x] % alignment, Is.EqualTo(0), $"expert {x} start aligned");
            Assert.That(offsets[x + 1] - offsets[x], Is.EqualTo((count + alignment - 1) / alignment * alignment), $"expert {x} segment");
            for (int r = offsets[x]; r < offsets[x + 1]; r++)
            {
                bool padding = r - offsets[x] >= count;
                Assert.That(mIndices[r], Is.EqualTo(padding ? -1 : x), $"row {r}");
                Assert.That(rowTokens[r] == -1, Is.EqualTo(padding), $"row {r} token");
            }
        }
        Assert.That(mIndices.Skip(used), Is.All.EqualTo(-1));
        Assert.That(rowTokens.Skip(used), Is.All.EqualTo(-1));
        // Every (token, slot) exactly once, at a row of its expert and token; dropped slots map to -1.
        var seen = new HashSet<int>();
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] < 0) { Assert.That(inverse[i], Is.EqualTo(-1)); continue; }
            int r = inverse[i];
            Assert.That(seen.Add(r), $"row {r} used twice");
            Assert.That(mIndices[r], Is.EqualTo(ids[i]));
            Assert.That(rowTokens[r], Is.EqualTo(i / k));
        }
        Assert.That(seen.Count, Is.EqualTo(ids.Count(id => id >= 0)));
        Assert.That(mIndices.Count(m => m >= 0), Is.EqualTo(seen.Count));
    }

    [TestCase(37, 4, 8, 16, 1)]
    [TestCase(300, 8, 32, 128, 2)]
    [TestCase(1, 8, 256, 128, 3)]
    [TestCase(5, 3, 7, 1, 4)]
    public void ContiguousLayoutInvariants(int tokens, int k, int e, int alignment, int seed)
    {
        CheckContiguous(RandomIds(tokens, k, e, seed), k, e, alignment);
        CheckContiguous(RandomIds(tokens, k, e, seed + 100, dropSome: true), k, e, alignment);
    }

    [Test]
    public void AllTokensToOneExpertAndEmptyExperts()
    {
        var ids = Enumerable.Repeat(5, 200).ToArray(); // T = 200, k = 1, all to expert 5 of 8
        CheckContiguous(ids, 1, 8, 128);
        var offsets = new int[9];
        int capacity = MoePermutation.ContiguousCapacity(200, 1, 8);
        int used = MoePermutation.BuildContiguous(ids, 1, 8, 128, offsets, new int[capacity], new int[capacity], new int[200]);
        Assert.That(used, Is.EqualTo(256));
        Assert.That(offsets, Is.EqualTo(new[] { 0, 0, 0, 0, 0, 0, 256, 256, 256 }));

        var maskedM = new int[8];
        var rowTokens = new int[8 * 200];
        var inverse = new int[200];
        int expected = MoePermutation.BuildMasked(ids, 1, 8, 200, maskedM, rowTokens, inverse);
        Assert.That(maskedM, Is.EqualTo(new[] { 0, 0, 0, 0, 0, 200, 0, 0 }));
        Assert.That(expected, Is.EqualTo(200));
        Assert.That(inverse, Is.EqualTo(Enumerable.Range(5 * 200, 200)));
    }

    [TestCase(1, 8, 16, 4)]
    [TestCase(50, 4, 8, 40)]
    public void MaskedLayoutCounts(int tokens, int k, int e, int mMax)
    {
        var ids = RandomIds(tokens, k, e, tokens, dropSome: true);
        var maskedM = new int[e];
        var rowTokens = new int[e * mMax];
        var inverse = new int[ids.Length];
        int expected = MoePermutation.BuildMasked(ids, k, e, mMax, maskedM, rowTokens, inverse);
        for (int x = 0; x < e; x++)
        {
            Assert.That(maskedM[x], Is.EqualTo(ids.Count(id => id == x)), $"expert {x}");
            Assert.That(rowTokens.Skip(x * mMax + maskedM[x]).Take(mMax - maskedM[x]), Is.All.EqualTo(-1));
        }
        var active = maskedM.Where(m => m > 0).ToArray();
        Assert.That(expected, Is.EqualTo((int)Math.Ceiling(active.Sum() / (double)active.Length)));
        var seen = new HashSet<int>();
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] < 0) { Assert.That(inverse[i], Is.EqualTo(-1)); continue; }
            int r = inverse[i];
            Assert.That(seen.Add(r));
            Assert.That(r / mMax, Is.EqualTo(ids[i]));
            Assert.That(r % mMax, Is.LessThan(maskedM[ids[i]]));
            Assert.That(rowTokens[r], Is.EqualTo(i / k));
        }
    }

    [Test]
    public void MaskedOverflowThrowsBeforeWriting()
    {
        int[] ids = [1, 2, 1, 3, 1, 0]; // expert 1 gets 3 rows
        var maskedM = new[] { 9, 9, 9, 9 };
        var ex = Assert.Throws<ArgumentException>(() => MoePermutation.BuildMasked(ids, 2, 4, 2, maskedM, new int[8], new int[6]));
        Assert.That(ex!.ParamName, Is.EqualTo("mMax"));
        Assert.That(maskedM, Is.All.EqualTo(9));
    }

    [TestCase(4)]
    [TestCase(-2)]
    public void BadExpertIdsThrowBeforeWriting(int bad)
    {
        int[] ids = [0, 1, 2, bad];
        var offsets = new int[5];
        offsets.AsSpan().Fill(7);
        int capacity = MoePermutation.ContiguousCapacity(2, 2, 4, 8);
        var ex = Assert.Throws<ArgumentException>(() => MoePermutation.BuildContiguous(ids, 2, 4, 8, offsets, new int[capacity], new int[capacity], new int[4]));
        Assert.That(ex!.Message, Does.Contain("[1, 1]"));
        Assert.That(offsets, Is.All.EqualTo(7));
        Assert.Throws<ArgumentException>(() => MoePermutation.BuildMasked(ids, 2, 4, 4, new int[4], new int[16], new int[4]));

        var backend = new CpuBackend();
        using var idBuf = backend.Upload<int>(ids, DType.Int32, 2, 2);
        using var off = backend.Allocate(DType.Int32, 5);
        using var mi = backend.Allocate(DType.Int32, capacity);
        using var rt = backend.Allocate(DType.Int32, capacity);
        using var inv = backend.Allocate(DType.Int32, 2, 2);
        Assert.Throws<ArgumentException>(() => MoePermutation.BuildContiguous(backend, idBuf, 4, 8, off, mi, rt, inv));
    }

    [Test]
    public void GatherQuantizeEqualsQuantizingEachRowAndLeavesPaddingAlone()
    {
        const int tokens = 9, k = 3, e = 5, width = 300, alignment = 4;
        var ids = RandomIds(tokens, k, e, 11, dropSome: true);
        var rng = new Random(5);
        var x = Enumerable.Range(0, tokens * width).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        int capacity = MoePermutation.ContiguousCapacity(tokens, k, e, alignment);
        var mIndices = new int[capacity];
        var rowTokens = new int[capacity];
        var inverse = new int[ids.Length];
        MoePermutation.BuildContiguous(ids, k, e, alignment, new int[e + 1], mIndices, rowTokens, inverse);

        int groups = ActivationQuantization.GroupCount(width);
        var rows = Enumerable.Repeat(Float8E4M3.FromRaw(0x55), capacity * width).ToArray();
        var scales = Enumerable.Repeat(-1f, capacity * groups).ToArray();
        MoePermutation.GatherQuantize(x, width, inverse, k, rows, scales);

        var plain = new float[capacity * width];
        MoePermutation.Gather<float>(x, width, inverse, k, plain);
        for (int r = 0; r < capacity; r++)
        {
            int t = rowTokens[r];
            if (t < 0)
            {
                Assert.That(rows.Skip(r * width).Take(width).Select(v => v.RawValue), Is.All.EqualTo((byte)0x55), $"padding row {r} untouched");
                Assert.That(scales.Skip(r * groups).Take(groups), Is.All.EqualTo(-1f));
                continue;
            }
            var q = new Float8E4M3[width];
            var s = new float[groups];
            ActivationQuantization.Quantize(x.AsSpan(t * width, width), width, q, s);
            Assert.That(rows.Skip(r * width).Take(width), Is.EqualTo(q), $"row {r}");
            Assert.That(scales.Skip(r * groups).Take(groups), Is.EqualTo(s));
            Assert.That(plain.Skip(r * width).Take(width), Is.EqualTo(x.Skip(t * width).Take(width)));
        }

        // Backend API, FP32 and UE8M0 scales, gives the same codes.
        var backend = new CpuBackend();
        using var xBuf = backend.Upload<float>(x, DType.Float32, tokens, width);
        using var invBuf = backend.Upload<int>(inverse, DType.Int32, tokens, k);
        using var qBuf = backend.Allocate(DType.Float8E4M3, capacity, width);
        using var sBuf = backend.Allocate(DType.Float32, capacity, groups);
        using var eBuf = backend.Allocate(DType.UE8M0, capacity, groups);
        backend.Zero(qBuf);
        MoePermutation.Gather(backend, xBuf, invBuf, qBuf, sBuf.View);
        var got = backend.Download<Float8E4M3>(qBuf);
        var gotS = backend.Download<float>(sBuf);
        for (int r = 0; r < capacity; r++)
        {
            if (rowTokens[r] < 0) continue;
            Assert.That(got.Skip(r * width).Take(width), Is.EqualTo(rows.Skip(r * width).Take(width)));
            Assert.That(gotS.Skip(r * groups).Take(groups), Is.EqualTo(scales.Skip(r * groups).Take(groups)));
        }
        MoePermutation.Gather(backend, xBuf, invBuf, qBuf, eBuf.View);
        var e8 = backend.Download<byte>(eBuf);
        got = backend.Download<Float8E4M3>(qBuf);
        int r0 = inverse.First(v => v >= 0);
        int t0 = rowTokens[r0];
        var q8 = new Float8E4M3[width];
        var s8 = new float[groups];
        ActivationQuantization.Quantize(x.AsSpan(t0 * width, width), width, q8, s8, ScaleFormat.UE8M0);
        Assert.That(got.Skip(r0 * width).Take(width), Is.EqualTo(q8));
        Assert.That(e8.Skip(r0 * groups).Take(groups).Select(UE8M0.ToSingle), Is.EqualTo(s8));
    }

    [Test]
    public void CombineMatchesFloat64Reference()
    {
        const int tokens = 40, k = 4, e = 6, width = 96;
        var ids = RandomIds(tokens, k, e, 21, dropSome: true);
        int capacity = MoePermutation.ContiguousCapacity(tokens, k, e, 8);
        var inverse = new int[ids.Length];
        MoePermutation.BuildContiguous(ids, k, e, 8, new int[e + 1], new int[capacity], new int[capacity], inverse);
        var rng = new Random(8);
        var expertOut = Enumerable.Range(0, capacity * width).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var weights = Enumerable.Range(0, ids.Length).Select(_ => (float)rng.NextDouble()).ToArray();
        var shared = Enumerable.Range(0, tokens * width).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var output = new float[tokens * width];
        MoePermutation.Combine(expertOut, width, inverse, weights, k, shared, output);
        var noShared = new float[tokens * width];
        MoePermutation.Combine(expertOut, width, inverse, weights, k, default, noShared);

        var reference = new double[tokens * width];
        for (int t = 0; t < tokens; t++)
            for (int n = 0; n < width; n++)
            {
                double sum = 0;
                for (int j = 0; j < k; j++)
                    if (ids[t * k + j] >= 0) sum += (double)weights[t * k + j] * expertOut[inverse[t * k + j] * width + n];
                reference[t * width + n] = sum;
            }
        Assert.That(noShared, Is.EqualTo(reference).Within(1e-5));
        Assert.That(output, Is.EqualTo(reference.Select((v, i) => v + shared[i])).Within(1e-5));

        // Backend API: FP32 and BF16 outputs, BF16 shared.
        var backend = new CpuBackend();
        using var outBuf = backend.Upload<float>(expertOut, DType.Float32, capacity, width);
        using var invBuf = backend.Upload<int>(inverse, DType.Int32, tokens, k);
        using var wBuf = backend.Upload<float>(weights, DType.Float32, tokens, k);
        using var sharedBuf = backend.Upload<float>(shared, DType.Float32, tokens, width);
        using var sharedBf = backend.Upload<BFloat16>(shared.Select(v => (BFloat16)v).ToArray(), DType.BFloat16, tokens, width);
        using var y = backend.Allocate(DType.Float32, tokens, width);
        using var yBf = backend.Allocate(DType.BFloat16, tokens, width);
        MoePermutation.Combine(backend, outBuf, invBuf, wBuf, sharedBuf.View, y);
        Assert.That(backend.Download<float>(y), Is.EqualTo(output));
        MoePermutation.Combine(backend, outBuf, invBuf, wBuf, sharedBf.View, yBf);
        var bf = backend.Download<BFloat16>(yBf);
        for (int i = 0; i < bf.Length; i++)
        {
            double expected = reference[i] + BFloat16.ToSingle(BFloat16.ToRaw(shared[i]));
            Assert.That(bf[i].ToSingle(), Is.EqualTo(expected).Within(Math.Abs(expected) / 128 + 1e-5), $"element {i}");
        }

        // Inverse rows past the expert output are rejected before any write.
        var badInverse = (int[])inverse.Clone();
        badInverse[7] = capacity;
        var untouched = Enumerable.Repeat(3f, tokens * width).ToArray();
        Assert.Throws<ArgumentException>(() => MoePermutation.Combine(expertOut, width, badInverse, weights, k, default, untouched));
        Assert.That(untouched, Is.All.EqualTo(3f));
    }

    [Test]
    public void BackendBuildMatchesSpanBuild()
    {
        const int tokens = 70, k = 8, e = 32;
        var ids = RandomIds(tokens, k, e, 5);
        int capacity = MoePermutation.ContiguousCapacity(tokens, k, e);
        var offsets = new int[e + 1];
        var mIndices = new int[capacity];
        var rowTokens = new int[capacity];
        var inverse = new int[ids.Length];
        int used = MoePermutation.BuildContiguous(ids, k, e, 128, offsets, mIndices, rowTokens, inverse);

        var backend = new CpuBackend();
        using var idBuf = backend.Upload<int>(ids, DType.Int32, tokens, k);
        using var off = backend.Allocate(DType.Int32, e + 1);
        using var mi = backend.Allocate(DType.Int32, capacity);
        using var rt = backend.Allocate(DType.Int32, capacity);
        using var inv = backend.Allocate(DType.Int32, tokens, k);
        Assert.That(MoePermutation.BuildContiguous(backend, idBuf, e, 128, off, mi, rt, inv), Is.EqualTo(used));
        Assert.That(backend.Download<int>(off), Is.EqualTo(offsets));
        Assert.That(backend.Download<int>(mi), Is.EqualTo(mIndices));
        Assert.That(backend.Download<int>(rt), Is.EqualTo(rowTokens));
        Assert.That(backend.Download<int>(inv), Is.EqualTo(inverse));

        using var small = backend.Allocate(DType.Int32, capacity - 1);
        Assert.Throws<ArgumentException>(() => MoePermutation.BuildContiguous(backend, idBuf, e, 128, off, small, small, inv));

        using var maskedM = backend.Allocate(DType.Int32, e);
        using var mrt = backend.Allocate(DType.Int32, e, 64);
        int expected = MoePermutation.BuildMasked(backend, idBuf, e, maskedM, mrt, inv);
        var counts = backend.Download<int>(maskedM);
        Assert.That(counts.Sum(), Is.EqualTo(tokens * k));
        Assert.That(expected, Is.GreaterThanOrEqualTo(1));
        using var tooSmall = backend.Allocate(DType.Int32, e, 2);
        Assert.Throws<ArgumentException>(() => MoePermutation.BuildMasked(backend, idBuf, e, maskedM, tooSmall, inv));
    }
}
