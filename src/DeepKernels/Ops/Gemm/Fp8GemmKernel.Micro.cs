using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepKernels.Ops.Gemm;

/// <summary>
/// AVX2 + FMA microkernels of <see cref="Fp8GemmKernel"/>. Each computes, for every (A row, B row)
/// pair it covers, one 8-lane block partial with a single FMA chain per pair (lane l takes
/// k = l, l + 8, ...), then promotes it: the bits do not depend on which kernel ran.
/// </summary>
internal static unsafe partial class Fp8GemmKernel
{
    private const int AccRow = PanelRows * 8;

    /// <summary>Prefetches the next blocks of four B rows that are streamed in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchRows(byte* b0, long ldb, long distance)
    {
        byte* b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
        Sse.Prefetch0(b0 + distance);
        Sse.Prefetch0(b1 + distance);
        Sse.Prefetch0(b2 + distance);
        Sse.Prefetch0(b3 + distance);
        Sse.Prefetch0(b0 + distance + 64);
        Sse.Prefetch0(b1 + distance + 64);
        Sse.Prefetch0(b2 + distance + 64);
        Sse.Prefetch0(b3 + distance + 64);
    }

    /// <summary>1 A row x 4 NaN-free FP8 B rows over one 128-K block, decoding B in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Fused1x4(float* a, byte* b, long ldb, float* acc, float scale)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        byte* b1 = b + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
        for (int k = 0; k < Kb; k += 8)
        {
            var x = Avx.LoadVector256(a + k);
            c0 = Fma.MultiplyAdd(x, RawB(b + k), c0);
            c1 = Fma.MultiplyAdd(x, RawB(b1 + k), c1);
            c2 = Fma.MultiplyAdd(x, RawB(b2 + k), c2);
            c3 = Fma.MultiplyAdd(x, RawB(b3 + k), c3);
        }
        Promote(acc, c0, scale); Promote(acc + 8, c1, scale); Promote(acc + 16, c2, scale); Promote(acc + 24, c3, scale);
    }

    /// <summary>1 A row x 8 NaN-free FP8 B rows over one 128-K block: 8 independent FMA chains.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Fused1x8(float* a, byte* b, long ldb, float* acc, float scale)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector256<float> c4 = default, c5 = default, c6 = default, c7 = default;
        byte* b1 = b + ldb, b2 = b1 + ldb, b3 = b2 + ldb, b4 = b3 + ldb, b5 = b4 + ldb, b6 = b5 + ldb, b7 = b6 + ldb;
        for (int k = 0; k < Kb; k += 8)
        {
            var x = Avx.LoadVector256(a + k);
            c0 = Fma.MultiplyAdd(x, RawB(b + k), c0);
            c1 = Fma.MultiplyAdd(x, RawB(b1 + k), c1);
            c2 = Fma.MultiplyAdd(x, RawB(b2 + k), c2);
            c3 = Fma.MultiplyAdd(x, RawB(b3 + k), c3);
            c4 = Fma.MultiplyAdd(x, RawB(b4 + k), c4);
            c5 = Fma.MultiplyAdd(x, RawB(b5 + k), c5);
            c6 = Fma.MultiplyAdd(x, RawB(b6 + k), c6);
            c7 = Fma.MultiplyAdd(x, RawB(b7 + k), c7);
        }
        Promote(acc, c0, scale); Promote(acc + 8, c1, scale); Promote(acc + 16, c2, scale); Promote(acc + 24, c3, scale);
        Promote(acc + 32, c4, scale); Promote(acc + 40, c5, scale); Promote(acc + 48, c6, scale); Promote(acc + 56, c7, scale);
    }

    /// <summary>2 A rows x 4 NaN-free FP8 B rows over one 128-K block, decoding B in registers once for both rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Fused2x4(float* a0, float* a1, byte* b, long ldb, float* acc, float scale0, float scale1)
    {
        Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector256<float> c10 = default, c11 = default, c12 = default, c13 = default;
        byte* b1 = b + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
        for (int k = 0; k < Kb; k += 8)
        {
            var x0 = Avx.LoadVector256(a0 + k);
            var x1 = Avx.LoadVector256(a1 + k);
            var y = RawB(b + k);
            c00 = Fma.MultiplyAdd(x0, y, c00); c10 = Fma.MultiplyAdd(x1, y, c10);
            y = RawB(b1 + k);
            c01 = Fma.MultiplyAdd(x0, y, c01); c11 = Fma.MultiplyAdd(x1, y, c11);
            y = RawB(b2 + k);
            c02 = Fma.MultiplyAdd(x0, y, c02); c12 = Fma.MultiplyAdd(x1, y, c12);
            y = RawB(b3 + k);
            c03 = Fma.MultiplyAdd(x0, y, c03); c13 = Fma.MultiplyAdd(x1, y, c13);
        }
        Promote(acc, c00, scale0); Promote(acc + 8, c01, scale0); Promote(acc + 16, c02, scale0); Promote(acc + 24, c03, scale0);
        float* acc1 = acc + AccRow;
        Promote(acc1, c10, scale1); Promote(acc1 + 8, c11, scale1); Promote(acc1 + 16, c12, scale1); Promote(acc1 + 24, c13, scale1);
    }

    /// <summary>4 A rows x 2 NaN-free FP8 B rows over one 128-K block, decoding B in registers once for the four rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Fused4x2(float* a, int lda, byte* b, long ldb, float* acc, float* scale)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default;
        Vector256<float> c20 = default, c21 = default, c30 = default, c31 = default;
        float* a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda;
        byte* b1 = b + ldb;
        for (int k = 0; k < Kb; k += 8)
        {
            var y0 = RawB(b + k);
            var y1 = RawB(b1 + k);
            var x = Avx.LoadVector256(a + k);
            c00 = Fma.MultiplyAdd(x, y0, c00); c01 = Fma.MultiplyAdd(x, y1, c01);
            x = Avx.LoadVector256(a1 + k);
            c10 = Fma.MultiplyAdd(x, y0, c10); c11 = Fma.MultiplyAdd(x, y1, c11);
            x = Avx.LoadVector256(a2 + k);
            c20 = Fma.MultiplyAdd(x, y0, c20); c21 = Fma.MultiplyAdd(x, y1, c21);
            x = Avx.LoadVector256(a3 + k);
            c30 = Fma.MultiplyAdd(x, y0, c30); c31 = Fma.MultiplyAdd(x, y1, c31);
        }
        Promote(acc, c00, scale[0]); Promote(acc + 8, c01, scale[0]);
        Promote(acc + AccRow, c10, scale[1]); Promote(acc + AccRow + 8, c11, scale[1]);
        Promote(acc + 2 * AccRow, c20, scale[2]); Promote(acc + 2 * AccRow + 8, c21, scale[2]);
        Promote(acc + 3 * AccRow, c30, scale[3]); Promote(acc + 3 * AccRow + 8, c31, scale[3]);
    }

    /// <summary>4 A rows x 3 decoded B rows over one 128-K block; acc[i, j] promoted with scale[i].</summary>
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
        Promote(acc, c00, scale[0]); Promote(acc + 8, c01, scale[0]); Promote(acc + 16, c02, scale[0]);
        Promote(acc + AccRow, c10, scale[1]); Promote(acc + AccRow + 8, c11, scale[1]); Promote(acc + AccRow + 16, c12, scale[1]);
        Promote(acc + 2 * AccRow, c20, scale[2]); Promote(acc + 2 * AccRow + 8, c21, scale[2]); Promote(acc + 2 * AccRow + 16, c22, scale[2]);
        Promote(acc + 3 * AccRow, c30, scale[3]); Promote(acc + 3 * AccRow + 8, c31, scale[3]); Promote(acc + 3 * AccRow + 16, c32, scale[3]);
    }

    /// <summary>4 A rows x 1 decoded B row over one 128-K block.</summary>
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
        Promote(acc, c0, scale[0]); Promote(acc + AccRow, c1, scale[1]); Promote(acc + 2 * AccRow, c2, scale[2]); Promote(acc + 3 * AccRow, c3, scale[3]);
    }

    /// <summary>1 A row x 4 decoded B rows over one 128-K block (leftover rows and NaN blocks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel1x4(float* a, float* b, float* acc, float scale)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (int k = 0; k < Kb; k += 8)
        {
            var x = Avx.LoadVector256(a + k);
            c0 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + k), c0);
            c1 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + Kb + k), c1);
            c2 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + 2 * Kb + k), c2);
            c3 = Fma.MultiplyAdd(x, Avx.LoadAlignedVector256(b + 3 * Kb + k), c3);
        }
        Promote(acc, c0, scale); Promote(acc + 8, c1, scale); Promote(acc + 16, c2, scale); Promote(acc + 24, c3, scale);
    }
}
