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
/// Scheme: A rows are decoded once per call into FP32 (unscaled E4M3 values, K padded with zeros
/// to a multiple of 128). B is processed in panels of <see cref="PanelRows"/> rows that lie inside
/// one 128-row scale block; panels are spread over threads. For every 128-wide K block the panel
/// is decoded into a small FP32 buffer (an L1-resident 8 KiB tile) and multiplied with 4x3 / 4x1 /
/// 1x4 register-blocked FMA microkernels (AVX2 + FMA; AVX-512 machines run the same 256-bit code).
/// Each K block's partial sums stay in registers and are then folded into per-(m, n) FP32 vector
/// accumulators with the combined scale sa[m, kb] * sb[n / 128, kb] (the promotion); lanes are
/// summed once at the end.
/// </para>
/// <para>
/// Decode (small M): every FP8 weight row is streamed from memory exactly once (with software
/// prefetch, as 16 rows are read interleaved); for a single A row, groups of four weight rows are
/// decoded in registers straight into the FMAs. Prefill (large M): each decoded panel block is
/// reused by up to <see cref="RowsPerPass"/> A rows, so decoding costs ~1/256 of the FMAs.
/// </para>
/// <para>
/// Decoding: blocks of 128 codes without NaN or non-zero subnormal codes (the common case for
/// real weights) use shift/mask/multiply-by-2^120; other blocks use an exact integer decode with
/// a permute for subnormals and a blend for NaN, so NaN inputs give NaN outputs and no FP32
/// subnormal arithmetic (slow on some CPUs) is ever executed.
/// </para>
/// </summary>
internal static unsafe class Fp8GemmKernel
{
    /// <summary>B rows per work item (divides 128, so a panel never straddles a scale block).</summary>
    public const int PanelRows = 16;

    /// <summary>A rows whose accumulators are live at once for one panel.</summary>
    public const int RowsPerPass = 256;

    /// <summary>A rows decoded to FP32 at a time (bounds the temporary memory).</summary>
    public const int RowsPerChunk = 256;

    private const int Kb = Fp8Gemm.BlockSize;

    private const int PrefetchDistance = 256;

    /// <summary>Whether the AVX2 + FMA kernels run (otherwise a scalar loop with the same numerics).</summary>
    public static bool IsAccelerated => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// Computes output rows [<paramref name="m0"/>, <paramref name="m1"/>) of
    /// <paramref name="p"/> (reading the same rows of A and of its scales). This is the building
    /// block for GroupedGemm: call it once per expert with that expert's B, scales and row range
    /// (rows of A/D already grouped by expert). With <paramref name="options"/> = null the work
    /// runs on the calling thread, so a caller can parallelize across experts instead.
    /// </summary>
    public static void Run(in Fp8GemmProblem p, int m0, int m1, ParallelOptions? options)
    {
        if (m1 <= m0 || p.N <= 0 || p.K <= 0) return;
        if (!IsAccelerated)
        {
            RunScalar(p, m0, m1);
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
                    var scratch = new Scratch();
                    try
                    {
                        for (int panel = 0; panel < panels; panel++) chunk.RunPanel(panel, scratch);
                    }
                    finally { scratch.Dispose(); }
                }
                else
                {
                    Parallel.For(0, panels, options, () => new Scratch(), (panel, _, scratch) =>
                    {
                        chunk.RunPanel(panel, scratch);
                        return scratch;
                    }, scratch => scratch.Dispose());
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(af);
        }
    }

    private static void DecodeA(in Fp8GemmProblem p, int c0, int rows, float* af, int kPadded)
    {
        for (int r = 0; r < rows; r++)
        {
            var src = new ReadOnlySpan<byte>(p.A + (c0 + r) * p.Lda, p.K);
            var dst = new Span<float>(af + (long)r * kPadded, kPadded);
            Float8E4M3.ToSingle(src, dst[..p.K]);
            dst[p.K..].Clear();
        }
    }

    /// <summary>Per-thread buffers: one decoded panel block and the live accumulators.</summary>
    private sealed class Scratch : IDisposable
    {
        public readonly float* B = (float*)NativeMemory.AlignedAlloc(PanelRows * Kb * sizeof(float), 64);
        public readonly float* Acc = (float*)NativeMemory.AlignedAlloc(RowsPerPass * PanelRows * 8 * sizeof(float), 64);
        public readonly float* RowScale = (float*)NativeMemory.AlignedAlloc(RowsPerPass * sizeof(float), 64);

        public void Dispose()
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
                for (int kb = 0; kb < kBlocks; kb++)
                {
                    float sb = p.ScaleB[nb * p.ScaleBStride + kb];
                    if (passRows == 1 && (kb + 1) * Kb <= p.K)
                    {
                        // Single-row decode: FP8 weights go straight from memory into FMAs.
                        RunSingleRowBlock(p, af + (long)pass0 * kPadded + kb * Kb, n0, panelRows, kb,
                            p.ScaleA[(c0 + pass0) * p.ScaleAStride + kb] * sb, s);
                        continue;
                    }
                    DecodePanelBlock(p, n0, panelRows, kb, s.B);
                    for (int r = 0; r < passRows; r++)
                        s.RowScale[r] = p.ScaleA[(c0 + pass0 + r) * p.ScaleAStride + kb] * sb;
                    float* aBlock = af + (long)pass0 * kPadded + kb * Kb;
                    int r4 = passRows & ~3;
                    for (int r = 0; r < r4; r += 4)
                    {
                        float* a = aBlock + (long)r * kPadded;
                        float* acc = s.Acc + r * PanelRows * 8;
                        for (int j = 0; j < 15; j += 3)
                            Kernel4x3(a, kPadded, s.B + j * Kb, acc + j * 8, s.RowScale + r);
                        Kernel4x1(a, kPadded, s.B + 15 * Kb, acc + 15 * 8, s.RowScale + r);
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
    /// One A row against a panel for one full 128-K block: groups of 4 plain B rows are decoded in
    /// registers and multiplied at once (no FP32 staging); other groups go through the buffer.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunSingleRowBlock(in Fp8GemmProblem p, float* a, int n0, int panelRows, int kb, float scale, Scratch s)
    {
        long k0 = (long)kb * Kb;
        bool decoded = false;
        for (int j = 0; j < PanelRows; j += 4)
        {
            if (j >= panelRows) break;
            byte* b0 = p.B + (n0 + j) * p.Ldb + k0;
            if (j + 4 <= panelRows && Float8E4M3.IsPlain128(b0) && Float8E4M3.IsPlain128(b0 + p.Ldb)
                && Float8E4M3.IsPlain128(b0 + 2 * p.Ldb) && Float8E4M3.IsPlain128(b0 + 3 * p.Ldb))
            {
                Fused1x4(a, b0, p.Ldb, s.Acc + j * 8, scale);
            }
            else
            {
                if (!decoded) DecodePanelBlock(p, n0, panelRows, kb, s.B);
                decoded = true;
                Kernel1x4(a, s.B + j * Kb, s.Acc + j * 8, scale);
            }
        }
    }

    /// <summary>1 A row x 4 plain FP8 B rows over one 128-K block, decoding B in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Fused1x4(float* a, byte* b, long ldb, float* acc, float scale)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        byte* b1 = b + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
        Sse.Prefetch0(b + PrefetchDistance);
        Sse.Prefetch0(b1 + PrefetchDistance);
        Sse.Prefetch0(b2 + PrefetchDistance);
        Sse.Prefetch0(b3 + PrefetchDistance);
        Sse.Prefetch0(b + PrefetchDistance + 64);
        Sse.Prefetch0(b1 + PrefetchDistance + 64);
        Sse.Prefetch0(b2 + PrefetchDistance + 64);
        Sse.Prefetch0(b3 + PrefetchDistance + 64);
        for (int k = 0; k < Kb; k += 8)
        {
            var x = Avx.LoadVector256(a + k);
            c0 = Fma.MultiplyAdd(x, Float8E4M3.DecodeVectorNoNaN(Avx2.ConvertToVector256Int32((sbyte*)(b + k))), c0);
            c1 = Fma.MultiplyAdd(x, Float8E4M3.DecodeVectorNoNaN(Avx2.ConvertToVector256Int32((sbyte*)(b1 + k))), c1);
            c2 = Fma.MultiplyAdd(x, Float8E4M3.DecodeVectorNoNaN(Avx2.ConvertToVector256Int32((sbyte*)(b2 + k))), c2);
            c3 = Fma.MultiplyAdd(x, Float8E4M3.DecodeVectorNoNaN(Avx2.ConvertToVector256Int32((sbyte*)(b3 + k))), c3);
        }
        Promote(acc, c0, scale); Promote(acc + 8, c1, scale); Promote(acc + 16, c2, scale); Promote(acc + 24, c3, scale);
    }

    /// <summary>Decodes B[n0 .. n0+rows, kb*128 .. +128] to FP32 (unscaled), zero-padding rows and K.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodePanelBlock(in Fp8GemmProblem p, int n0, int rows, int kb, float* dst)
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
            if (width == Kb && Float8E4M3.IsPlain128(src))
            {
                for (int i = 0; i < Kb; i += 8)
                    Float8E4M3.DecodeVectorNoNaN(Avx2.ConvertToVector256Int32((sbyte*)(src + i))).Store(d + i);
            }
            else if (width == Kb)
            {
                // NaN or subnormal codes present: the exact (slower) vector decode.
                for (int i = 0; i < Kb; i += 8)
                    Float8E4M3.DecodeVector(Avx2.ConvertToVector256Int32((sbyte*)(src + i))).Store(d + i);
            }
            else
            {
                // Partial K block: exact decode, zeros past K.
                Float8E4M3.ToSingle(new ReadOnlySpan<byte>(src, width), new Span<float>(d, width));
                new Span<float>(d + width, Kb - width).Clear();
            }
        }
        if (rows < PanelRows) new Span<float>(dst + rows * Kb, (PanelRows - rows) * Kb).Clear();
    }

    /// <summary>4 A rows x 3 B rows over one 128-K block; acc[i, j] += partial * scale[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x3(float* a, int lda, float* b, float* acc, float* scale)
    {
        Vector256<float> c00 = default, c01 = default, c02 = default, c10 = default, c11 = default, c12 = default;
        Vector256<float> c20 = default, c21 = default, c22 = default, c30 = default, c31 = default, c32 = default;
        float* a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda;
        for (int k = 0; k < Kb; k += 8)
        {
            var b0 = Avx.LoadAlignedVector256(b + k);
            var b1 = Avx.LoadAlignedVector256(b + Kb + k);
            var b2 = Avx.LoadAlignedVector256(b + 2 * Kb + k);
            var x = Avx.LoadVector256(a + k);
            c00 = Fma.MultiplyAdd(x, b0, c00); c01 = Fma.MultiplyAdd(x, b1, c01); c02 = Fma.MultiplyAdd(x, b2, c02);
            x = Avx.LoadVector256(a1 + k);
            c10 = Fma.MultiplyAdd(x, b0, c10); c11 = Fma.MultiplyAdd(x, b1, c11); c12 = Fma.MultiplyAdd(x, b2, c12);
            x = Avx.LoadVector256(a2 + k);
            c20 = Fma.MultiplyAdd(x, b0, c20); c21 = Fma.MultiplyAdd(x, b1, c21); c22 = Fma.MultiplyAdd(x, b2, c22);
            x = Avx.LoadVector256(a3 + k);
            c30 = Fma.MultiplyAdd(x, b0, c30); c31 = Fma.MultiplyAdd(x, b1, c31); c32 = Fma.MultiplyAdd(x, b2, c32);
        }
        const int Row = PanelRows * 8;
        Promote(acc, c00, scale[0]); Promote(acc + 8, c01, scale[0]); Promote(acc + 16, c02, scale[0]);
        Promote(acc + Row, c10, scale[1]); Promote(acc + Row + 8, c11, scale[1]); Promote(acc + Row + 16, c12, scale[1]);
        Promote(acc + 2 * Row, c20, scale[2]); Promote(acc + 2 * Row + 8, c21, scale[2]); Promote(acc + 2 * Row + 16, c22, scale[2]);
        Promote(acc + 3 * Row, c30, scale[3]); Promote(acc + 3 * Row + 8, c31, scale[3]); Promote(acc + 3 * Row + 16, c32, scale[3]);
    }

    /// <summary>4 A rows x 1 B row over one 128-K block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x1(float* a, int lda, float* b, float* acc, float* scale)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        float* a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda;
        for (int k = 0; k < Kb; k += 8)
        {
            var b0 = Avx.LoadAlignedVector256(b + k);
            c0 = Fma.MultiplyAdd(Avx.LoadVector256(a + k), b0, c0);
            c1 = Fma.MultiplyAdd(Avx.LoadVector256(a1 + k), b0, c1);
            c2 = Fma.MultiplyAdd(Avx.LoadVector256(a2 + k), b0, c2);
            c3 = Fma.MultiplyAdd(Avx.LoadVector256(a3 + k), b0, c3);
        }
        const int Row = PanelRows * 8;
        Promote(acc, c0, scale[0]); Promote(acc + Row, c1, scale[1]); Promote(acc + 2 * Row, c2, scale[2]); Promote(acc + 3 * Row, c3, scale[3]);
    }

    /// <summary>1 A row x 4 B rows over one 128-K block (decode and leftover rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel1x4(float* a, float* b, float* acc, float scale)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector256<float> d0 = default, d1 = default, d2 = default, d3 = default;
        for (int k = 0; k < Kb; k += 16)
        {
            var x = Avx.LoadVector256(a + k);
            var y = Avx.LoadVector256(a + k + 8);
            c0 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + k), c0);
            c1 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + Kb + k), c1);
            c2 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + 2 * Kb + k), c2);
            c3 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + 3 * Kb + k), c3);
            d0 = Fma.MultiplyAdd(y, Avx.LoadAlignedVector256(b + k + 8), d0);
            d1 = Fma.MultiplyAdd(y, Avx.LoadAlignedVector256(b + Kb + k + 8), d1);
            d2 = Fma.MultiplyAdd(y, Avx.LoadAlignedVector256(b + 2 * Kb + k + 8), d2);
            d3 = Fma.MultiplyAdd(y, Avx.LoadAlignedVector256(b + 3 * Kb + k + 8), d3);
        }
        Promote(acc, c0 + d0, scale); Promote(acc + 8, c1 + d1, scale); Promote(acc + 16, c2 + d2, scale); Promote(acc + 24, c3 + d3, scale);
    }

    /// <summary>The promotion: acc += blockPartial * (sa * sb), in FP32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Promote(float* acc, Vector256<float> partial, float scale) =>
        Avx.Store(acc, Fma.MultiplyAdd(partial, Vector256.Create(scale), Avx.LoadVector256(acc)));

    /// <summary>Sums the lanes of each accumulator and writes (or adds to) D.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Store(in Fp8GemmProblem p, int m0, int rows, int n0, int cols, float* acc)
    {
        for (int r = 0; r < rows; r++)
        {
            long rowOffset = (m0 + r) * p.Ldd + n0;
            for (int j = 0; j < cols; j++)
            {
                float value = Vector256.Sum(Avx.LoadVector256(acc + (r * PanelRows + j) * 8));
                if (p.OutputBFloat16) ((ushort*)p.D)[rowOffset + j] = BFloat16.ToRaw(value);
                else if (p.Accumulate) ((float*)p.D)[rowOffset + j] += value;
                else ((float*)p.D)[rowOffset + j] = value;
            }
        }
    }

    /// <summary>Portable fallback with the same numerics (per-block partials, promoted in FP32).</summary>
    internal static void RunScalar(in Fp8GemmProblem p, int m0, int m1)
    {
        var table = Float8E4M3.DecodedValues;
        for (int m = m0; m < m1; m++)
        {
            for (int n = 0; n < p.N; n++)
            {
                float acc = 0;
                for (int k0 = 0, kb = 0; k0 < p.K; k0 += Kb, kb++)
                {
                    float partial = 0;
                    int end = Math.Min(p.K, k0 + Kb);
                    for (int k = k0; k < end; k++)
                        partial += table[p.A[m * p.Lda + k]] * table[p.B[n * p.Ldb + k]];
                    acc += partial * (p.ScaleA[m * p.ScaleAStride + kb] * p.ScaleB[n / Kb * p.ScaleBStride + kb]);
                }
                long o = m * p.Ldd + n;
                if (p.OutputBFloat16) ((ushort*)p.D)[o] = BFloat16.ToRaw(acc);
                else if (p.Accumulate) ((float*)p.D)[o] += acc;
                else ((float*)p.D)[o] = acc;
            }
        }
    }
}
