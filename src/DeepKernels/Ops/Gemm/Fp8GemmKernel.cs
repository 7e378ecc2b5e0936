using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepKernels.Formats;

namespace DeepKernels.Ops.Gemm;

/// <summary>
/// One FP8 block-scaled GEMM problem in raw host memory: D[M, N] (op) A[M, K] * B[N, K]^T with
/// FP32 scales. Strides are in elements; scale grids are row-major with the given row strides:
/// sa[m, kb] = ScaleA[m * ScaleAStride + kb], sb[nb, kb] = ScaleB[nb * ScaleBStride + kb].
/// Callers validate sizes and scales; the kernel trusts them.
/// </summary>
internal unsafe struct Fp8GemmProblem
{
    /// <summary>A[m, k] = A[m * Lda + k] (E4M3 codes).</summary>
    public byte* A;
    public long Lda;
    public float* ScaleA;
    public long ScaleAStride;

    /// <summary>B[n, k] = B[n * Ldb + k] (E4M3 codes); row n uses scale row n / 128.</summary>
    public byte* B;
    public long Ldb;
    public float* ScaleB;
    public long ScaleBStride;

    /// <summary>D[m, n] = D[m * Ldd + n], float or bfloat16 bits.</summary>
    public void* D;
    public long Ldd;
    public bool OutputBFloat16;
    public bool Accumulate;

    public int M, N, K;
}

/// <summary>
/// The CPU FP8 GEMM kernel, and the building block of the grouped (MoE) GEMM.
/// <para>
/// Numerics (identical bits on every path, whatever the tiling, thread count or SIMD support):
/// for each output (m, n) and each 128-wide K block, an 8-lane partial sum where lane l
/// accumulates k = l, l + 8, ... with fused multiply-adds; each lane is then promoted,
/// acc[l] = fma(partial[l], sa[m, kb] * sb[n / 128, kb], acc[l]); the 8 lanes are summed in a
/// fixed tree at the end. The portable path (<see cref="RunPortable"/>) replays the same
/// operations one lane at a time, so SIMD and fallback results are bitwise identical.
/// </para>
/// <para>
/// Decoding: A is decoded once per call to FP32 times 2^60; B codes are decoded by placing their
/// bits into an FP32 pattern (sign-extend, shift, mask: the value times 2^-120, exact for every
/// finite code including subnormals), so streaming B costs no multiply. Every product is then the
/// true product times 2^-60: all values stay multiples of 2^-138, so each rounding happens exactly
/// as it would unscaled, and one exact multiply by 2^60 restores the partial before promotion.
/// NaN codes (S.1111.111) would decode to a finite value this way: each 128-byte block of B is
/// checked for them (a few byte compares) and blocks that hold one are decoded with a NaN blend.
/// </para>
/// <para>
/// Scheme: B is processed in panels of <see cref="PanelRows"/> rows inside one 128-row scale
/// block; panels are spread over threads, so every weight byte is read from memory once per pass
/// of up to <see cref="RowsPerPass"/> A rows. Decode (up to <see cref="FusedMaxRows"/> A rows,
/// <see cref="FusedPanel"/>): groups of four weight rows are streamed along all of K and decoded
/// in registers straight into the FMAs, so decoding costs 3 instructions per 8 weights shared by
/// up to 4 A rows and never touches memory. Prefill: each panel's 128-K block is decoded into an
/// L1-resident FP32 tile and multiplied with 4x3 / 4x1 / 1x4 register-blocked FMA microkernels.
/// From about 8 A rows on, the FP32 FMAs, not memory, bound the speed (2 * M flops per weight byte).
/// </para>
/// </summary>
internal static unsafe partial class Fp8GemmKernel
{
    /// <summary>B rows per work item (divides 128, so a panel never straddles a scale block).</summary>
    public const int PanelRows = 16;

    /// <summary>A rows whose accumulators are live at once for one panel.</summary>
    public const int RowsPerPass = 256;

    /// <summary>A rows decoded to FP32 at a time (bounds the temporary memory).</summary>
    public const int RowsPerChunk = 256;

    /// <summary>
    /// A rows up to which B is decoded in registers (no FP32 tile): the decode path. Beyond 8
    /// rows the FMAs bound the speed and the decoded-tile 4x3 kernel (12 accumulators, one decode
    /// per panel block) measured faster.
    /// </summary>
    public const int FusedMaxRows = 8;

    private const int Kb = Fp8Gemm.BlockSize;

    private const int PrefetchDistance = 256;

    /// <summary>Prefetch distance when 4 rows are streamed along K (<see cref="FusedPanel"/>): 4 blocks ahead.</summary>
    private const int QuadPrefetchDistance = 512;

    /// <summary>2^60: A is decoded times this, and block partials are multiplied by it (exact).</summary>
    internal const float TwoPow60 = 1.152921504606846976e18f;

    /// <summary>The NaN that NaN codes of B decode to (any NaN propagates the same way).</summary>
    private const int NaNBits = 0x7FC0_0000;

    /// <summary>Mask that keeps sign, exponent and mantissa of a code shifted left by 20.</summary>
    private const int RawMask = unchecked((int)0x87F0_0000);

    /// <summary>Whether the AVX2 + FMA kernels run (otherwise the portable loop with the same bits).</summary>
    public static bool IsAccelerated => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// Computes output rows [<paramref name="m0"/>, <paramref name="m1"/>) of
    /// <paramref name="p"/> (reading the same rows of A and of its scales). This is the building
    /// block for GroupedGemm: call it once per expert with that expert's B, scales and row range
    /// (rows of A/D already grouped by expert). With <paramref name="options"/> = null the work
    /// runs on the calling thread, so a caller can parallelize across experts instead.
    /// <paramref name="portable"/> forces the portable path (tests compare both).
    /// </summary>
    public static void Run(in Fp8GemmProblem p, int m0, int m1, ParallelOptions? options, bool portable = false)
    {
        if (m1 <= m0 || p.N <= 0 || p.K <= 0) return;
        if (portable || !IsAccelerated)
        {
            RunPortable(p, m0, m1);
            return;
        }
        int kBlocks = Fp8Gemm.BlockCount(p.K);
        int kPadded = kBlocks * Kb;
        int chunkRows = Math.Min(RowsPerChunk, m1 - m0);
        float* af = (float*)NativeMemory.AlignedAlloc((nuint)((long)chunkRows * kPadded * sizeof(float)), 64);
        try
        {
            for (int c0 = m0; c0 < m1; c0 += RowsPerChunk)
            {
                int rows = Math.Min(RowsPerChunk, m1 - c0);
                DecodeA(p, c0, rows, af, kPadded);
                var chunk = new Chunk(p, af, kPadded, kBlocks, c0, rows);
                int panels = Fp8Gemm.BlockCount(p.N) * (Kb / PanelRows);
                if (options is null || options.MaxDegreeOfParallelism == 1)
                {
                    for (int panel = 0; panel < panels; panel++) chunk.RunPanel(panel, Scratch.Current);
                }
                else
                {
                    Parallel.For(0, panels, options, panel => chunk.RunPanel(panel, Scratch.Current));
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(af);
        }
    }

    /// <summary>A rows as FP32 times 2^60 (exact), K zero-padded to whole blocks.</summary>
    private static void DecodeA(in Fp8GemmProblem p, int c0, int rows, float* af, int kPadded)
    {
        var factor = Vector256.Create(TwoPow60);
        var table = Float8E4M3.DecodedValues;
        for (int r = 0; r < rows; r++)
        {
            float* dst = af + (long)r * kPadded;
            // A table lookup: the same values as Float8E4M3.ToSingle, and measured ~10x faster
            // (that vector decode cost ~16 ns per code, ~0.1 ms of a 1.4 ms M = 1 call at K = 7168).
            byte* src = p.A + (c0 + r) * p.Lda;
            for (int k = 0; k < p.K; k++) dst[k] = table[src[k]];
            new Span<float>(dst + p.K, kPadded - p.K).Clear();
            for (int k = 0; k < kPadded; k += 8) (Vector256.Load(dst + k) * factor).Store(dst + k);
        }
    }

    /// <summary>
    /// Per-thread buffers (one decoded panel block and the live accumulators), kept for the
    /// thread's lifetime so calls allocate nothing. A panel runs to completion before the thread
    /// starts another, so one set per thread suffices.
    /// </summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? current;

        public readonly float* B = (float*)NativeMemory.AlignedAlloc(PanelRows * Kb * sizeof(float), 64);
        public readonly float* Acc = (float*)NativeMemory.AlignedAlloc(RowsPerPass * PanelRows * 8 * sizeof(float), 64);
        public readonly float* RowScale = (float*)NativeMemory.AlignedAlloc(RowsPerPass * sizeof(float), 64);

        public static Scratch Current => current ??= new Scratch();

        ~Scratch()
        {
            NativeMemory.AlignedFree(B);
            NativeMemory.AlignedFree(Acc);
            NativeMemory.AlignedFree(RowScale);
        }
    }

    /// <summary>Rows [C0, C0 + Rows) of A decoded in Af, and the problem.</summary>
    private readonly struct Chunk(Fp8GemmProblem p, float* af, int kPadded, int kBlocks, int c0, int rows)
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void RunPanel(int panel, Scratch s)
        {
            int nb = panel / (Kb / PanelRows);
            int n0 = nb * Kb + panel % (Kb / PanelRows) * PanelRows;
            if (n0 >= p.N) return;
            int panelRows = Math.Min(PanelRows, p.N - n0);
            for (int pass0 = 0; pass0 < rows; pass0 += RowsPerPass)
            {
                int passRows = Math.Min(RowsPerPass, rows - pass0);
                new Span<float>(s.Acc, passRows * PanelRows * 8).Clear();
                float* aPass = af + (long)pass0 * kPadded;
                if (passRows <= FusedMaxRows)
                {
                    FusedPanel(p, aPass, kPadded, kBlocks, c0 + pass0, passRows, nb, n0, panelRows, s);
                    Store(p, c0 + pass0, passRows, n0, panelRows, s.Acc);
                    continue;
                }
                for (int kb = 0; kb < kBlocks; kb++)
                {
                    float sb = p.ScaleB[nb * p.ScaleBStride + kb];
                    for (int r = 0; r < passRows; r++)
                        s.RowScale[r] = p.ScaleA[(c0 + pass0 + r) * p.ScaleAStride + kb] * sb;
                    float* aBlock = aPass + kb * Kb;
                    DecodePanelBlock(p, n0, panelRows, kb, s.B);
                    int r4 = passRows & ~3;
                    for (int r = 0; r < r4; r += 4)
                    {
                        float* a = aBlock + (long)r * kPadded;
                        float* acc = s.Acc + r * PanelRows * 8;
                        int j = 0;
                        for (; j + 3 <= PanelRows; j += 3)
                            Kernel4x3(a, kPadded, s.B + j * Kb, acc + j * 8, s.RowScale + r);
                        for (; j < PanelRows; j++)
                            Kernel4x1(a, kPadded, s.B + j * Kb, acc + j * 8, s.RowScale + r);
                    }
                    for (int r = r4; r < passRows; r++)
                    {
                        float* a = aBlock + (long)r * kPadded;
                        float* acc = s.Acc + r * PanelRows * 8;
                        for (int j = 0; j < PanelRows; j += 4)
                            Kernel1x4(a, s.B + j * Kb, acc + j * 8, s.RowScale[r]);
                    }
                }
                Store(p, c0 + pass0, passRows, n0, panelRows, s.Acc);
            }
        }
    }

    /// <summary>
    /// The decode order for few A rows: each group of 4 B rows is streamed along all of K (4
    /// sequential streams per thread, friendly to the prefetchers even for short rows) while the
    /// A rows stay in L1/L2; a single A row takes 8 B rows at a time (1x8: 8 independent FMA
    /// chains, where 4 left the FMA latency exposed). Groups of 4 full, NaN-free B rows are decoded in registers straight
    /// into the FMAs (4x2 tiles, then 2x4 / 1x4 for the last A rows); other groups (NaN codes, the
    /// partial last K block, the last rows of B) go through a decoded 4-row tile.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FusedPanel(in Fp8GemmProblem p, float* a, int lda, int kBlocks, int m0, int rows, int nb, int n0, int panelRows, Scratch s)
    {
        // Long rows (4096+): prefetch 4 blocks ahead in each row. Shorter rows: that would land in
        // rows already being read, so prefetch the next group of rows instead (measured faster at
        // K = 2048, single thread M = 1: 1.30-1.46 ms vs 1.53-1.64 ms for N = 7168).
        // One A row: 8 B rows at a time, so 8 independent FMA chains hide the FMA latency.
        int group = rows == 1 ? 8 : 4;
        long prefetch = p.K >= 32 * Kb ? QuadPrefetchDistance : group * p.Ldb;
        for (int j0 = 0; j0 < panelRows; j0 += group)
        {
            int groupRows = Math.Min(group, panelRows - j0);
            byte* bg = p.B + (n0 + j0) * p.Ldb;
            for (int kb = 0; kb < kBlocks; kb++)
            {
                float sb = p.ScaleB[nb * p.ScaleBStride + kb];
                for (int r = 0; r < rows; r++) s.RowScale[r] = p.ScaleA[(m0 + r) * p.ScaleAStride + kb] * sb;
                float* ak = a + kb * Kb;
                bool full = (kb + 1) * Kb <= p.K;
                if (groupRows == 8 && full && NaNFree128(bg + kb * Kb, p.Ldb, 8))
                {
                    byte* b0 = bg + kb * Kb;
                    PrefetchRows(b0, p.Ldb, prefetch);
                    PrefetchRows(b0 + 4 * p.Ldb, p.Ldb, prefetch);
                    Fused1x8(ak, b0, p.Ldb, s.Acc + j0 * 8, s.RowScale[0]);
                    continue;
                }
                for (int j = j0; j < j0 + groupRows; j += 4)
                {
                    int quadRows = Math.Min(4, panelRows - j);
                    byte* b0 = p.B + (n0 + j) * p.Ldb + kb * Kb;
                    float* acc = s.Acc + j * 8;
                    if (quadRows == 4 && full && NaNFree128(b0, p.Ldb, 4))
                    {
                        PrefetchRows(b0, p.Ldb, prefetch);
                        int r = 0;
                        for (; r + 4 <= rows; r += 4)
                        {
                            float* ar = ak + (long)r * lda;
                            Fused4x2(ar, lda, b0, p.Ldb, acc + r * AccRow, s.RowScale + r);
                            Fused4x2(ar, lda, b0 + 2 * p.Ldb, p.Ldb, acc + r * AccRow + 16, s.RowScale + r);
                        }
                        for (; r + 2 <= rows; r += 2)
                            Fused2x4(ak + (long)r * lda, ak + (long)(r + 1) * lda, b0, p.Ldb, acc + r * AccRow, s.RowScale[r], s.RowScale[r + 1]);
                        if (r < rows)
                            Fused1x4(ak + (long)r * lda, b0, p.Ldb, acc + r * AccRow, s.RowScale[r]);
                    }
                    else
                    {
                        DecodePanelBlock(p, n0 + j, quadRows, kb, s.B, 4);
                        for (int r = 0; r < rows; r++)
                            Kernel1x4(ak + (long)r * lda, s.B, acc + r * AccRow, s.RowScale[r]);
                    }
                }
            }
        }
    }

    /// <summary>Whether the 128-code blocks at <paramref name="codes"/> of <paramref name="count"/> rows hold no NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool NaNFree128(byte* codes, long ldb, int count)
    {
        for (int i = 0; i < count; i++)
            if (!NaNFree128(codes + i * ldb)) return false;
        return true;
    }

    /// <summary>Whether the 128 codes at <paramref name="codes"/> hold no NaN (S.1111.111).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool NaNFree128(byte* codes)
    {
        // code | 0x80 is -1 as a signed byte exactly for NaN codes: a running max finds one.
        var high = Vector256.Create(unchecked((sbyte)0x80));
        var max = Vector256.Max(Vector256.Max(Vector256.Load((sbyte*)codes) | high, Vector256.Load((sbyte*)codes + 32) | high),
            Vector256.Max(Vector256.Load((sbyte*)codes + 64) | high, Vector256.Load((sbyte*)codes + 96) | high));
        return !Vector256.EqualsAny(max, Vector256<sbyte>.AllBitsSet);
    }

    /// <summary>8 B codes at <paramref name="codes"/> as FP32 times 2^-120 (exact; NaN codes give a finite value).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> RawB(byte* codes) =>
        ((Avx2.ConvertToVector256Int32((sbyte*)codes) << 20) & Vector256.Create(RawMask)).AsSingle();

    /// <summary>As <see cref="RawB(byte*)"/>, with NaN codes decoded to NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> RawBWithNaN(byte* codes)
    {
        var x = Avx2.ConvertToVector256Int32((sbyte*)codes);
        var raw = ((x << 20) & Vector256.Create(RawMask)).AsSingle();
        var isNaN = Vector256.Equals(x & Vector256.Create(0x7F), Vector256.Create(0x7F)).AsSingle();
        return Vector256.ConditionalSelect(isNaN, Vector256.Create(NaNBits).AsSingle(), raw);
    }

    /// <summary>One B code as FP32 times 2^-120: the scalar twin of <see cref="RawBWithNaN"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float RawB(byte code) => (code & 0x7F) == 0x7F
        ? BitConverter.Int32BitsToSingle(NaNBits)
        : BitConverter.Int32BitsToSingle(((sbyte)code << 20) & RawMask);

    /// <summary>Decodes B[n0 .. n0+rows, kb*128 .. +128] (times 2^-120), zero-padding K and rows up to <paramref name="padRows"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodePanelBlock(in Fp8GemmProblem p, int n0, int rows, int kb, float* dst, int padRows = PanelRows)
    {
        int k0 = kb * Kb, width = Math.Min(Kb, p.K - k0);
        for (int r = 0; r < rows; r++)
        {
            byte* src = p.B + (n0 + r) * p.Ldb + k0;
            float* d = dst + r * Kb;
            // Rows are read 128 bytes at a time, 16 rows interleaved: prefetch two blocks ahead
            // so each row's stream stays ahead of the hardware prefetchers' reach.
            Sse.Prefetch0(src + PrefetchDistance);
            Sse.Prefetch0(src + PrefetchDistance + 64);
            if (width == Kb && NaNFree128(src))
            {
                for (int i = 0; i < Kb; i += 8) RawB(src + i).Store(d + i);
            }
            else if (width == Kb)
            {
                for (int i = 0; i < Kb; i += 8) RawBWithNaN(src + i).Store(d + i);
            }
            else
            {
                for (int i = 0; i < width; i++) d[i] = RawB(src[i]);
                new Span<float>(d + width, Kb - width).Clear();
            }
        }
        if (rows < padRows) new Span<float>(dst + rows * Kb, (padRows - rows) * Kb).Clear();
    }

    /// <summary>The promotion: acc += (blockPartial * 2^60) * (sa * sb), in FP32, per lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Promote(float* acc, Vector256<float> partial, float scale) =>
        Avx.Store(acc, Fma.MultiplyAdd(partial * Vector256.Create(TwoPow60), Vector256.Create(scale), Avx.LoadVector256(acc)));

    /// <summary>The fixed lane sum: (l0+l4 + l2+l6) + (l1+l5 + l3+l7); see <see cref="SumLanes(ReadOnlySpan{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SumLanes(Vector256<float> v)
    {
        var s = v.GetLower() + v.GetUpper();
        return (s.GetElement(0) + s.GetElement(2)) + (s.GetElement(1) + s.GetElement(3));
    }

    /// <summary>The scalar twin of <see cref="SumLanes(Vector256{float})"/>.</summary>
    private static float SumLanes(ReadOnlySpan<float> lanes)
    {
        float s0 = lanes[0] + lanes[4], s1 = lanes[1] + lanes[5], s2 = lanes[2] + lanes[6], s3 = lanes[3] + lanes[7];
        return (s0 + s2) + (s1 + s3);
    }

    /// <summary>Writes (or adds to) D[m, n].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreOne(in Fp8GemmProblem p, long offset, float value)
    {
        if (p.OutputBFloat16) ((ushort*)p.D)[offset] = BFloat16.ToRaw(value);
        else if (p.Accumulate) ((float*)p.D)[offset] += value;
        else ((float*)p.D)[offset] = value;
    }

    /// <summary>Sums the lanes of each accumulator and writes (or adds to) D.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Store(in Fp8GemmProblem p, int m0, int rows, int n0, int cols, float* acc)
    {
        for (int r = 0; r < rows; r++)
        {
            long rowOffset = (m0 + r) * p.Ldd + n0;
            for (int j = 0; j < cols; j++)
                StoreOne(p, rowOffset + j, SumLanes(Avx.LoadVector256(acc + (r * PanelRows + j) * 8)));
        }
    }

    /// <summary>
    /// Portable path: the exact operations of the SIMD kernels, one lane at a time (lane l of a
    /// block partial takes k = l, l + 8, ...; per-lane promotion; the fixed lane sum), so its
    /// results are bitwise identical to theirs. Used where AVX2/FMA are missing.
    /// </summary>
    internal static void RunPortable(in Fp8GemmProblem p, int m0, int m1)
    {
        var table = Float8E4M3.DecodedValues;
        Span<float> acc = stackalloc float[8];
        Span<float> partial = stackalloc float[8];
        for (int m = m0; m < m1; m++)
        {
            byte* a = p.A + m * p.Lda;
            for (int n = 0; n < p.N; n++)
            {
                byte* b = p.B + n * p.Ldb;
                acc.Clear();
                for (int k0 = 0, kb = 0; k0 < p.K; k0 += Kb, kb++)
                {
                    partial.Clear();
                    int width = Math.Min(Kb, p.K - k0);
                    for (int i = 0; i < width; i++)
                        partial[i & 7] = MathF.FusedMultiplyAdd(table[a[k0 + i]] * TwoPow60, RawB(b[k0 + i]), partial[i & 7]);
                    float scale = p.ScaleA[m * p.ScaleAStride + kb] * p.ScaleB[n / Kb * p.ScaleBStride + kb];
                    for (int l = 0; l < 8; l++) acc[l] = MathF.FusedMultiplyAdd(partial[l] * TwoPow60, scale, acc[l]);
                }
                StoreOne(p, m * p.Ldd + n, SumLanes(acc));
            }
        }
    }
}
