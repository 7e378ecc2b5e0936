using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>
/// The device-side MoE layout builder (native/kernels/moe_layout.cu) against the CPU layouts:
/// exact equality of every map, the row bound the host uses instead of the exact count, and the
/// device error word for bad ids and masked overflow.
/// </summary>
[Category("Cuda")]
public class CudaMoeLayoutTests
{
    private const int Garbage = 0x5EED;

    private sealed record Contiguous(int Rows, int[] Offsets, int[] MIndices, int[] RowTokens, int[] Inverse);

    private sealed record Masked(int ExpectedM, int[] MaskedM, int[] RowTokens, int[] Inverse);

    // Output buffers start as garbage so that every element the builder must write is checked.
    private static Contiguous BuildContiguous(Backend backend, int[] ids, int t, int k, int e, int align, int extraRows = 0)
    {
        int capacity = MoePermutation.ContiguousCapacity(t, k, e, align) + extraRows;
        using var idsView = Put(backend, ids, DType.Int32, t, k);
        using var offsets = Put(backend, Enumerable.Repeat(Garbage, e + 1).ToArray(), DType.Int32, e + 1);
        using var mIndices = Put(backend, Enumerable.Repeat(Garbage, capacity).ToArray(), DType.Int32, capacity);
        using var rowTokens = Put(backend, Enumerable.Repeat(Garbage, capacity).ToArray(), DType.Int32, capacity);
        using var inverse = Put(backend, Enumerable.Repeat(Garbage, t * k).ToArray(), DType.Int32, t, k);
        int rows = MoePermutation.BuildContiguous(backend, idsView, e, align, offsets, mIndices, rowTokens, inverse);
        return new Contiguous(rows, backend.Download<int>(offsets), backend.Download<int>(mIndices), backend.Download<int>(rowTokens), backend.Download<int>(inverse));
    }

    private static Masked BuildMasked(Backend backend, int[] ids, int t, int k, int e, int mMax)
    {
        using var idsView = Put(backend, ids, DType.Int32, t, k);
        using var maskedM = Put(backend, Enumerable.Repeat(Garbage, e).ToArray(), DType.Int32, e);
        using var rowTokens = Put(backend, Enumerable.Repeat(Garbage, e * mMax).ToArray(), DType.Int32, e, mMax);
        using var inverse = Put(backend, Enumerable.Repeat(Garbage, t * k).ToArray(), DType.Int32, t, k);
        int expected = MoePermutation.BuildMasked(backend, idsView, e, maskedM, rowTokens, inverse);
        return new Masked(expected, backend.Download<int>(maskedM), backend.Download<int>(rowTokens), backend.Download<int>(inverse));
    }

    /// <summary>Random DeepSeek-style routing: k distinct experts per token, some dropped slots (-1).</summary>
    private static int[] RandomIds(int t, int k, int e, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[t * k];
        for (int i = 0; i < t; i++)
        {
            var chosen = Enumerable.Range(0, e).OrderBy(_ => rng.Next()).Take(k).ToArray();
            for (int j = 0; j < k; j++) ids[i * k + j] = i % 7 == 3 && j == 2 ? -1 : chosen[j];
        }
        return ids;
    }

    private static void AssertContiguousEqual(Contiguous expected, Contiguous actual, int align, int capacity)
    {
        Assert.That(actual.Offsets, Is.EqualTo(expected.Offsets), "expert offsets");
        Assert.That(actual.MIndices, Is.EqualTo(expected.MIndices), "m_indices (-1 on padding and past the used rows)");
        Assert.That(actual.RowTokens, Is.EqualTo(expected.RowTokens), "row -> token");
        Assert.That(actual.Inverse, Is.EqualTo(expected.Inverse), "(token, slot) -> row");
        // The host gets a bound, not the exact count: a multiple of the alignment, at least the
        // used rows and within the buffer; rows past the used ones are padding.
        Assert.That(actual.Rows, Is.GreaterThanOrEqualTo(expected.Rows));
        Assert.That(actual.Rows % align, Is.Zero);
        Assert.That(actual.Rows, Is.LessThanOrEqualTo(capacity));
    }

    private static void CompareBoth(int[] ids, int t, int k, int e, int align, int mMax)
    {
        var cuda = CudaTestBackends.Get();
        cuda.ThrowIfDeviceRoutingError();
        int capacity = MoePermutation.ContiguousCapacity(t, k, e, align);
        AssertContiguousEqual(BuildContiguous(CpuBackend.Default, ids, t, k, e, align), BuildContiguous(cuda, ids, t, k, e, align), align, capacity);
        var expected = BuildMasked(CpuBackend.Default, ids, t, k, e, mMax);
        var actual = BuildMasked(cuda, ids, t, k, e, mMax);
        Assert.That(actual.MaskedM, Is.EqualTo(expected.MaskedM), "masked_m");
        Assert.That(actual.RowTokens, Is.EqualTo(expected.RowTokens), "masked row -> token");
        Assert.That(actual.Inverse, Is.EqualTo(expected.Inverse), "masked (token, slot) -> row");
        Assert.That(actual.ExpectedM, Is.InRange(1, mMax));
        Assert.DoesNotThrow(cuda.ThrowIfDeviceRoutingError, "no routing error was recorded");
    }

    // T = 300, k = 8: 2400 ids span two 2048-id chunks, so chunk bases are exercised too.
    [TestCase(1)]
    [TestCase(5)]
    [TestCase(300)]
    public void RandomRoutingMatchesCpuExactly(int tokens) =>
        CompareBoth(RandomIds(tokens, 8, 256, tokens), tokens, 8, 256, 128, tokens);

    [Test]
    public void AllTokensToOneExpertMatchesCpu()
    {
        // Every slot of every token to expert 201: the stable rank must follow (token, slot) order
        // across lanes, warps, tiles and chunks.
        const int t = 300, k = 8;
        CompareBoth(Enumerable.Repeat(201, t * k).ToArray(), t, k, 256, 128, t * k);
    }

    [Test]
    public void ExpertsWithoutTokensAndUnalignedSegmentsMatchCpu()
    {
        // Only experts 0, 17 and 255; alignment 1 and 7 (segments not tile-aligned); repeated ids in a token.
        const int t = 37, k = 4;
        var rng = new Random(5);
        int[] used = [0, 17, 255];
        var ids = Enumerable.Range(0, t * k).Select(_ => rng.Next(4) == 0 ? -1 : used[rng.Next(3)]).ToArray();
        var cuda = CudaTestBackends.Get();
        foreach (int align in new[] { 1, 7 })
        {
            int capacity = MoePermutation.ContiguousCapacity(t, k, 256, align);
            AssertContiguousEqual(BuildContiguous(CpuBackend.Default, ids, t, k, 256, align), BuildContiguous(cuda, ids, t, k, 256, align), align, capacity);
        }
        CompareBoth(ids, t, k, 256, 128, t * k);
    }

    [Test]
    public void TrailingRowsOfALargerBufferArePaddingAndTheBoundCoversTheUsedRows()
    {
        var cuda = CudaTestBackends.Get();
        const int t = 20, k = 8, e = 256, align = 128;
        var ids = RandomIds(t, k, e, 99);
        var expected = BuildContiguous(CpuBackend.Default, ids, t, k, e, align, extraRows: 300);
        var actual = BuildContiguous(cuda, ids, t, k, e, align, extraRows: 300);
        int used = expected.Offsets[e];
        Assert.That(used, Is.EqualTo(expected.Rows));
        Assert.That(actual.Offsets[e], Is.EqualTo(used), "expertOffsets[E] holds the exact count on the device");
        Assert.That(actual.MIndices.Skip(used), Is.All.EqualTo(-1), "every row past the used ones is padding");
        Assert.That(actual.RowTokens.Skip(used), Is.All.EqualTo(-1));
        Assert.That(actual.MIndices, Is.EqualTo(expected.MIndices));
        Assert.That(actual.Rows, Is.EqualTo(CudaBackend.DeviceContiguousRows(t, k, e, align)));
        Assert.That(actual.Rows, Is.GreaterThanOrEqualTo(used));
    }

    [Test]
    public void ValidationModeReturnsTheExactCounts()
    {
        var cuda = CudaTestBackends.Get();
        const int t = 5, k = 8, e = 256;
        var ids = RandomIds(t, k, e, 3);
        cuda.ValidateDeviceRouting = true;
        try
        {
            Assert.That(BuildContiguous(cuda, ids, t, k, e, 128).Rows, Is.EqualTo(BuildContiguous(CpuBackend.Default, ids, t, k, e, 128).Rows));
            Assert.That(BuildMasked(cuda, ids, t, k, e, 4).ExpectedM, Is.EqualTo(BuildMasked(CpuBackend.Default, ids, t, k, e, 4).ExpectedM));
        }
        finally
        {
            cuda.ValidateDeviceRouting = false;
        }
    }

    [Test]
    public void MaskedOverflowIsAClearErrorFromTheDevice()
    {
        var cuda = CudaTestBackends.Get();
        cuda.ThrowIfDeviceRoutingError();
        // Expert 3 gets 5 rows, expert 9 gets 4, m_max = 3: expert 3 is reported (the lowest id).
        const int t = 5, k = 2, e = 16, mMax = 3;
        int[] ids = [9, 3, 3, 9, 3, 9, 3, 9, 3, 1];
        var result = BuildMasked(cuda, ids, t, k, e, mMax);
        Assert.That(result.MaskedM[3], Is.EqualTo(mMax), "masked_m is clamped to m_max so the GEMM stays in bounds");
        Assert.That(result.MaskedM[1], Is.EqualTo(1));
        Assert.That(result.Inverse[8], Is.EqualTo(-1), "the 5th row of expert 3 is dropped, not written out of bounds");
        var ex = Assert.Throws<ArgumentException>(cuda.ThrowIfDeviceRoutingError);
        Assert.That(ex!.Message, Does.Contain("expert 3 gets 5").And.Contain("mMax = 3"));
        Assert.DoesNotThrow(cuda.ThrowIfDeviceRoutingError, "reading the error clears it");

        cuda.ValidateDeviceRouting = true;
        try
        {
            var now = Assert.Throws<ArgumentException>(() => BuildMasked(cuda, ids, t, k, e, mMax));
            Assert.That(now!.Message, Does.Contain("expert 3 gets 5"));
        }
        finally
        {
            cuda.ValidateDeviceRouting = false;
        }
        // Host-resident ids on the CPU backend: checked before anything is written.
        Assert.Throws<ArgumentException>(() => BuildMasked(CpuBackend.Default, ids, t, k, e, mMax));
    }

    [Test]
    public void OutOfRangeDeviceIdIsRecordedAndSkipped()
    {
        var cuda = CudaTestBackends.Get();
        cuda.ThrowIfDeviceRoutingError();
        const int t = 4, k = 3, e = 8;
        int[] ids = [0, 1, 2, 3, 4, 5, 6, 8, 7, 1, -2, 2];
        var result = BuildContiguous(cuda, ids, t, k, e, 4);
        Assert.That(result.Inverse[7], Is.EqualTo(-1), "the bad slot is dropped");
        Assert.That(result.Inverse[10], Is.EqualTo(-1));
        Assert.That(result.Offsets[e], Is.EqualTo(4 * 8), "the other 10 ids: experts 1 and 2 twice, each padded to 4");
        var ex = Assert.Throws<ArgumentException>(cuda.ThrowIfDeviceRoutingError);
        Assert.That(ex!.Message, Does.Contain("got 8 at flat index 7").And.Contain("[-1, 8)"));
    }

    [TestCase(DType.Float32)]
    [TestCase(DType.UE8M0)]
    public void GatherAlsoWritesTheTokenCodesBitIdenticalToActivationQuantization(DType scaleType)
    {
        var cuda = CudaTestBackends.Get();
        const int t = 6, k = 3, e = 5, width = 300, groups = 3;
        var rng = new Random(8);
        var x = Gaussian(t * width, rng, 4.0);
        x[5] = float.NaN;
        var ids = RandomIds(t, k, e, 8);
        int capacity = MoePermutation.ContiguousCapacity(t, k, e, 4);
        var inverse = new int[t * k];
        MoePermutation.BuildContiguous(ids, k, e, 4, new int[e + 1], new int[capacity], new int[capacity], inverse);
        using var input = Put(cuda, x, DType.Float32, t, width);
        using var inv = Put(cuda, inverse, DType.Int32, t, k);
        using var rows = cuda.Allocate(DType.Float8E4M3, capacity, width);
        using var rowScales = cuda.Allocate(scaleType, capacity, groups);
        using var tokenQ = cuda.Allocate(DType.Float8E4M3, t, width);
        using var tokenScales = cuda.Allocate(scaleType, t, groups);
        using var refQ = cuda.Allocate(DType.Float8E4M3, t, width);
        using var refScales = cuda.Allocate(scaleType, t, groups);
        cuda.LaunchGather(new MoeGatherArgs(input, t, width, inv, k, rows, rowScales), tokenQ, tokenScales);
        ActivationQuantization.Quantize(cuda, input, refQ, refScales);
        Assert.That(cuda.Download<byte>(tokenQ), Is.EqualTo(cuda.Download<byte>(refQ)), "token codes");
        Assert.That(cuda.Download<byte>(tokenScales), Is.EqualTo(cuda.Download<byte>(refScales)), "token scales");
        // And the gathered rows are those codes.
        var q = cuda.Download<byte>(tokenQ);
        var r = cuda.Download<byte>(rows);
        for (int i = 0; i < t * k; i++)
        {
            if (inverse[i] < 0) continue;
            Assert.That(r.AsSpan(inverse[i] * width, width).ToArray(), Is.EqualTo(q.AsSpan(i / k * width, width).ToArray()), $"row of (token {i / k}, slot {i % k})");
        }
    }
}
