using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.GroupedGemm;

/// <summary>
/// Grouped FP8 block-scaled GEMM over G experts (DeepSeek-V3 MoE), with the dense GEMM's
/// numerics: D = A * B[g]^T, A E4M3 with 1x128 scales per row, B [G, N, K] E4M3 with 128x128
/// block scales [G, ceil(N/128), ceil(K/128)], FP32 accumulation with per-128-K promotion,
/// FP32 or BF16 output.
/// <para><b>Contiguous</b>: A [M, K] with <c>mIndices</c> [M]; row r uses expert mIndices[r].
/// Rows with -1 (padding) are skipped and their output rows are left untouched. The CPU backend
/// accepts any row order; the layout from <see cref="MoePermute.MoePermutation"/> (segments
/// aligned to 128) is what GPU kernels require.</para>
/// <para><b>Masked</b>: A [G, m_max, K] with <c>maskedM</c> [G]; expert g computes its first
/// masked_m[g] rows; the other rows of D are left untouched. Experts with no rows cost nothing.</para>
/// <para>On the CPU backend each expert segment is one call of the dense FP8 GEMM core
/// (<see cref="Gemm.Fp8Gemm"/>'s kernel) with that expert's weights: identical numerics, shared
/// microkernels, weight panels spread over threads.</para>
/// <para>Bad input (expert ids outside [-1, G), masked_m outside [0, m_max], non-finite or
/// non-positive scales of used rows, shape mismatches) throws an <see cref="ArgumentException"/>
/// before any work.</para>
/// </summary>
public static class GroupedFp8Gemm
{
    /// <summary>Rows and columns per scale block.</summary>
    public const int BlockSize = 128;

    /// <summary>Floating-point operations of computing <paramref name="rows"/> rows: 2 * rows * N * K.</summary>
    public static double Flops(long rows, int n, int k) => 2.0 * rows * n * k;

    /// <summary>
    /// Contiguous layout on spans: <paramref name="a"/> [M, K], <paramref name="aScales"/>
    /// [M, ceil(K/128)], <paramref name="mIndices"/> [M], <paramref name="b"/> [G, N, K],
    /// <paramref name="bScales"/> [G, ceil(N/128), ceil(K/128)], <paramref name="d"/> [M, N] FP32.
    /// </summary>
    public static unsafe void Contiguous(ReadOnlySpan<Float8E4M3> a, ReadOnlySpan<float> aScales, ReadOnlySpan<int> mIndices, ReadOnlySpan<Float8E4M3> b, ReadOnlySpan<float> bScales, int groups, int n, int k, Span<float> d)
    {
        CheckWeights(b.Length, bScales, groups, n, k);
        int m = mIndices.Length;
        Guard.Length(a.Length, (long)m * k, nameof(a));
        Guard.Length(aScales.Length, (long)m * KBlocks(k), nameof(aScales));
        Guard.Length(d.Length, (long)m * n, nameof(d));
        CheckMIndices(mIndices, groups, nameof(mIndices));
        CheckActivationScales(aScales, KBlocks(k), mIndices, nameof(aScales));
        fixed (Float8E4M3* pa = a)
        fixed (float* psa = aScales)
        fixed (int* pm = mIndices)
        fixed (Float8E4M3* pb = b)
        fixed (float* psb = bScales)
        fixed (float* pd = d)
        {
            GroupedGemmCpu.Run(new Fp8GroupedProblem((nint)pa, (nint)psa, (nint)pm, 0, m, 0, groups, n, k, (nint)pb, (nint)psb, (nint)pd, false), CpuBackend.Default.ParallelOptions);
        }
    }

    /// <summary>
    /// Masked layout on spans: <paramref name="a"/> [G, mMax, K], <paramref name="aScales"/>
    /// [G, mMax, ceil(K/128)], <paramref name="maskedM"/> [G], <paramref name="b"/> [G, N, K],
    /// <paramref name="bScales"/> [G, ceil(N/128), ceil(K/128)], <paramref name="d"/> [G, mMax, N] FP32.
    /// </summary>
    public static unsafe void Masked(ReadOnlySpan<Float8E4M3> a, ReadOnlySpan<float> aScales, ReadOnlySpan<int> maskedM, int mMax, ReadOnlySpan<Float8E4M3> b, ReadOnlySpan<float> bScales, int n, int k, Span<float> d)
    {
        int groups = maskedM.Length;
        CheckWeights(b.Length, bScales, groups, n, k);
        Guard.Positive(mMax, nameof(mMax));
        long rows = (long)groups * mMax;
        Guard.Length(a.Length, rows * k, nameof(a));
        Guard.Length(aScales.Length, rows * KBlocks(k), nameof(aScales));
        Guard.Length(d.Length, rows * n, nameof(d));
        CheckMaskedM(maskedM, mMax, nameof(maskedM));
        CheckActivationScales(aScales, KBlocks(k), maskedM, mMax, nameof(aScales));
        fixed (Float8E4M3* pa = a)
        fixed (float* psa = aScales)
        fixed (int* pm = maskedM)
        fixed (Float8E4M3* pb = b)
        fixed (float* psb = bScales)
        fixed (float* pd = d)
        {
            GroupedGemmCpu.Run(new Fp8GroupedProblem((nint)pa, (nint)psa, 0, (nint)pm, (int)rows, mMax, groups, n, k, (nint)pb, (nint)psb, (nint)pd, false), CpuBackend.Default.ParallelOptions);
        }
    }

    internal static int KBlocks(int k) => (k + BlockSize - 1) / BlockSize;

    private static void CheckWeights(int bLength, ReadOnlySpan<float> bScales, int groups, int n, int k)
    {
        Guard.Positive(groups, nameof(groups));
        Guard.Positive(n, nameof(n));
        Guard.Positive(k, nameof(k));
        Guard.Length(bLength, (long)groups * n * k, "b");
        Guard.Length(bScales.Length, (long)groups * KBlocks(n) * KBlocks(k), nameof(bScales));
        Guard.AllFinitePositive(bScales, nameof(bScales));
    }

    internal static void CheckMIndices(ReadOnlySpan<int> mIndices, int groups, string name)
    {
        for (int r = 0; r < mIndices.Length; r++)
            if (mIndices[r] < -1 || mIndices[r] >= groups)
                throw new ArgumentException($"Expected {name}[{r}] in [-1, {groups}), got {mIndices[r]}.", name);
    }

    internal static void CheckMaskedM(ReadOnlySpan<int> maskedM, long mMax, string name)
    {
        for (int g = 0; g < maskedM.Length; g++)
            if (maskedM[g] < 0 || maskedM[g] > mMax)
                throw new ArgumentException($"Expected {name}[{g}] in [0, m_max = {mMax}], got {maskedM[g]}.", name);
    }

    /// <summary>Scales of the rows that will be used must be finite and positive (padding rows may hold anything).</summary>
    internal static void CheckActivationScales(ReadOnlySpan<float> scales, int kBlocks, ReadOnlySpan<int> mIndices, string name)
    {
        for (int r = 0; r < mIndices.Length; r++)
            if (mIndices[r] >= 0) CheckScaleRow(scales, kBlocks, r, name);
    }

    /// <summary>Masked layout: only rows below masked_m of their expert are checked.</summary>
    internal static void CheckActivationScales(ReadOnlySpan<float> scales, int kBlocks, ReadOnlySpan<int> maskedM, int mMax, string name)
    {
        for (int g = 0; g < maskedM.Length; g++)
            for (int r = g * mMax; r < g * mMax + maskedM[g]; r++) CheckScaleRow(scales, kBlocks, r, name);
    }

    private static void CheckScaleRow(ReadOnlySpan<float> scales, int kBlocks, int r, string name)
    {
        var row = scales.Slice(r * kBlocks, kBlocks);
        for (int i = 0; i < kBlocks; i++)
            if (!float.IsFinite(row[i]) || row[i] <= 0)
                throw new ArgumentException($"Expected {name}[{r}, {i}] to be finite and > 0, got {row[i]}.", name);
    }

    // ---- Backend API ----

    /// <summary>
    /// Contiguous layout on <paramref name="backend"/>: <paramref name="a"/> Float8E4M3 [M, K],
    /// <paramref name="aScales"/> Float32 or UE8M0 [M, ceil(K/128)], <paramref name="mIndices"/>
    /// Int32 [M], <paramref name="b"/> Float8E4M3 [G, N, K], <paramref name="bScales"/> Float32
    /// or UE8M0 [G, ceil(N/128), ceil(K/128)], <paramref name="d"/> Float32 or BFloat16 [M, N].
    /// </summary>
    public static void Contiguous(Backend backend, TensorView a, TensorView aScales, TensorView mIndices, TensorView b, TensorView bScales, TensorView d)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var (groups, n, k) = CheckWeightTensors(backend, b, bScales);
        Guard.DType(mIndices, DType.Int32, nameof(mIndices));
        Guard.Rank(mIndices, 1, nameof(mIndices));
        long m = mIndices.Dim(0);
        Guard.Positive(m, "M");
        CheckTensor(backend, mIndices, nameof(mIndices));
        CheckActivationTensors(backend, a, aScales, d, n, k, m);
        if (mIndices.Location == MemoryLocation.Host)
        {
            var ids = mIndices.AsSpan<int>();
            CheckMIndices(ids, groups, nameof(mIndices));
            if (aScales.Location == MemoryLocation.Host && aScales.DType == DType.Float32)
                CheckActivationScales(aScales.AsSpan<float>(), KBlocks(k), ids, nameof(aScales));
        }
        var impl = Guard.Implementation<IGroupedGemmBackend>(backend, "grouped FP8 GEMM");
        impl.GroupedGemm(new GroupedGemmArgs(a, aScales, mIndices, null, (int)m, 0, groups, n, k, b, bScales, d, 0));
    }

    /// <summary>
    /// Masked layout on <paramref name="backend"/>: <paramref name="a"/> Float8E4M3
    /// [G, m_max, K], <paramref name="aScales"/> [G, m_max, ceil(K/128)], <paramref name="maskedM"/>
    /// Int32 [G], weights as in <see cref="Contiguous(Backend, TensorView, TensorView, TensorView, TensorView, TensorView, TensorView)"/>,
    /// <paramref name="d"/> [G, m_max, N]. <paramref name="expectedM"/> is a tiling hint (0: none).
    /// </summary>
    public static void Masked(Backend backend, TensorView a, TensorView aScales, TensorView maskedM, TensorView b, TensorView bScales, TensorView d, int expectedM = 0)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var (groups, n, k) = CheckWeightTensors(backend, b, bScales);
        Guard.DType(maskedM, DType.Int32, nameof(maskedM));
        Guard.Shape(maskedM, nameof(maskedM), groups);
        CheckTensor(backend, maskedM, nameof(maskedM));
        Guard.NonNegative(expectedM, nameof(expectedM));
        if (a.Rank != 3 || a.Dim(0) != groups)
            throw new ArgumentException($"Expected {nameof(a)} of shape [{groups}, m_max, {k}], got {a}.", nameof(a));
        long mMax = a.Dim(1);
        Guard.Positive(mMax, "m_max");
        if (aScales.Rank != 3 || d.Rank != 3)
            throw new ArgumentException($"Expected rank-3 {nameof(aScales)} and {nameof(d)} for the masked layout, got {aScales} and {d}.", nameof(d));
        Guard.Shape(aScales, nameof(aScales), groups, mMax, KBlocks(k));
        Guard.Shape(d, nameof(d), groups, mMax, n);
        long rows = groups * mMax;
        CheckActivationTensors(backend, a.Reshape(rows, a.Dim(2)), aScales.Reshape(rows, KBlocks(k)), d.Reshape(rows, n), n, k, rows);
        if (maskedM.Location == MemoryLocation.Host)
        {
            var counts = maskedM.AsSpan<int>();
            CheckMaskedM(counts, mMax, nameof(maskedM));
            if (aScales.Location == MemoryLocation.Host && aScales.DType == DType.Float32)
                CheckActivationScales(aScales.AsSpan<float>(), KBlocks(k), counts, (int)mMax, nameof(aScales));
        }
        var impl = Guard.Implementation<IGroupedGemmBackend>(backend, "grouped FP8 GEMM");
        impl.GroupedGemm(new GroupedGemmArgs(a, aScales, null, maskedM, checked((int)rows), (int)mMax, groups, n, k, b, bScales, d, expectedM));
    }

    private static (int Groups, int N, int K) CheckWeightTensors(Backend backend, TensorView b, TensorView bScales)
    {
        Guard.DType(b, DType.Float8E4M3, nameof(b));
        Guard.Rank(b, 3, nameof(b));
        long groups = b.Dim(0), n = b.Dim(1), k = b.Dim(2);
        Guard.Positive(groups, "G");
        Guard.Positive(n, "N");
        Guard.Positive(k, "K");
        if (n > int.MaxValue || k > int.MaxValue || groups > int.MaxValue)
            throw new ArgumentException($"Expected {nameof(b)} dimensions below 2^31, got {b}.", nameof(b));
        CheckTensor(backend, b, nameof(b));
        Guard.DType(bScales, DType.Float32, DType.UE8M0, nameof(bScales));
        Guard.Shape(bScales, nameof(bScales), groups, KBlocks((int)n), KBlocks((int)k));
        CheckTensor(backend, bScales, nameof(bScales));
        if (bScales.Location == MemoryLocation.Host && bScales.DType == DType.Float32)
            Guard.AllFinitePositive(bScales.AsSpan<float>(), nameof(bScales));
        return ((int)groups, (int)n, (int)k);
    }

    private static void CheckActivationTensors(Backend backend, TensorView a, TensorView aScales, TensorView d, int n, int k, long m)
    {
        Guard.DType(a, DType.Float8E4M3, nameof(a));
        Guard.Shape(a, nameof(a), m, k);
        CheckTensor(backend, a, nameof(a));
        Guard.DType(aScales, DType.Float32, DType.UE8M0, nameof(aScales));
        Guard.Shape(aScales, nameof(aScales), m, KBlocks(k));
        CheckTensor(backend, aScales, nameof(aScales));
        Guard.DType(d, DType.Float32, DType.BFloat16, nameof(d));
        Guard.Shape(d, nameof(d), m, n);
        CheckTensor(backend, d, nameof(d));
    }

    private static void CheckTensor(Backend backend, TensorView view, string name)
    {
        Guard.Contiguous(view, name);
        Guard.OnBackend(view, backend, name);
    }
}

/// <summary>Validated arguments of <see cref="GroupedFp8Gemm"/>; exactly one of MIndices and MaskedM is set.</summary>
internal readonly record struct GroupedGemmArgs(
    TensorView A, TensorView AScales, TensorView? MIndices, TensorView? MaskedM, int Rows, int MMax, int Groups, int N, int K,
    TensorView B, TensorView BScales, TensorView D, int ExpectedM);

/// <summary>A backend's implementation of the grouped FP8 GEMM.</summary>
internal interface IGroupedGemmBackend
{
    void GroupedGemm(in GroupedGemmArgs args);
}
