using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepKernels.Formats;

namespace DeepKernels.Backends.Cpu;

/// <summary>
/// One grouped FP8 GEMM problem in raw addresses: D[r, :] = A[r, :] * B[g(r)]^T for the rows
/// r that belong to an expert g (contiguous: mIndices[r] &gt;= 0; masked: r within masked_m of its
/// slab). Addresses are nint so the struct can travel into parallel loops.
/// </summary>
internal readonly record struct Fp8GroupedProblem(
    nint A, nint AScales, nint MIndices, nint MaskedM, int Rows, int MMax, int Groups, int N, int K,
    nint B, nint BScales, nint D, bool DIsBFloat16);

/// <summary>
/// The CPU FP8 block-scaled GEMM core used by the grouped GEMM, per expert segment. Numerics
/// per DESIGN.md: FP8 codes widened exactly to FP32; each 128-wide K block's partial sum is
/// accumulated in FP32, then multiplied by sa[m, kb] * sb[n/128, kb] and added to an FP32
/// accumulator. Two paths: a register-blocked 4x16 broadcast kernel over a transposed,
/// dequantized B panel for segments of &gt;= 32 rows (prefill), and a dot-product path that
/// streams each weight row once for short segments (decode; memory bound by design).
/// </summary>
internal static unsafe class Fp8BlockKernel
{
    public const int Block = 128;
    private const int SmallRows = 32;
    private const int MaxChunkRows = 128;

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>Exact E4M3 -> float for <paramref name="count"/> codes (AVX2 when present).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Widen(byte* source, float* destination, int count)
    {
        int i = 0;
        if (Avx2.IsSupported)
        {
            var low7 = Vector256.Create(0x7F);
            var signBit = Vector256.Create(0x80);
            // (e<<23 | m<<20) read as float is 2^(e-127)(1+m/8), or m*2^-129 for e = 0; times 2^120 gives E4M3's value.
            var rebias = Vector256.Create(BitConverter.UInt32BitsToSingle((127 + 120) << 23));
            var nan = Vector256.Create(float.NaN);
            for (; i + 8 <= count; i += 8)
            {
                var v = Avx2.ConvertToVector256Int32(source + i);
                var rest = v & low7;
                var magnitude = (rest << 20).AsSingle() * rebias;
                magnitude = Vector256.ConditionalSelect(Vector256.Equals(rest, low7).AsSingle(), nan, magnitude);
                var result = magnitude.AsInt32() | ((v & signBit) << 24);
                result.AsSingle().Store(destination + i);
            }
        }
        for (; i < count; i++) destination[i] = Float8E4M3.ToSingle(source[i]);
    }

    /// <summary>Runs every (segment chunk, 128-column block) of the problem, in parallel.</summary>
    public static void Run(in Fp8GroupedProblem p, ParallelOptions options)
    {
        // Work items: (group, first row, row count) chunks x column blocks.
        int nBlocks = (p.N + Block - 1) / Block;
        int chunkCount = CountChunks(p);
        if (chunkCount == 0) return;
        int[] chunks = System.Buffers.ArrayPool<int>.Shared.Rent(chunkCount * 3);
        try
        {
            FillChunks(p, chunks);
            var problem = p;
            long items = (long)chunkCount * nBlocks;
            if (options.MaxDegreeOfParallelism == 1 || items == 1)
            {
                for (long i = 0; i < items; i++) RunItem(problem, chunks, (int)(i / nBlocks), (int)(i % nBlocks));
            }
            else
            {
                // Column blocks of one chunk are adjacent items: a thread tends to reuse its A rows.
                Parallel.For(0L, items, options, i => RunItem(problem, chunks, (int)(i / nBlocks), (int)(i % nBlocks)));
            }
        }
        finally
        {
            System.Buffers.ArrayPool<int>.Shared.Return(chunks);
        }
    }

    private static int ChunksOf(int rows) => rows < SmallRows ? (rows > 0 ? 1 : 0) : (rows + MaxChunkRows - 1) / MaxChunkRows;

    private static int CountChunks(in Fp8GroupedProblem p)
    {
        int count = 0;
        ForEachSegment(p, ref count, null);
        return count;
    }

    private static void FillChunks(in Fp8GroupedProblem p, int[] chunks)
    {
        int count = 0;
        ForEachSegment(p, ref count, chunks);
    }

    /// <summary>Enumerates segments (runs of rows of one group) and writes their chunks when <paramref name="chunks"/> is given.</summary>
    private static void ForEachSegment(in Fp8GroupedProblem p, ref int count, int[]? chunks)
    {
        if (p.MIndices != 0)
        {
            int* m = (int*)p.MIndices;
            int r = 0;
            while (r < p.Rows)
            {
                int g = m[r];
                int end = r + 1;
                while (end < p.Rows && m[end] == g) end++;
                if (g >= 0) AddChunks(g, r, end - r, ref count, chunks);
                r = end;
            }
        }
        else
        {
            int* masked = (int*)p.MaskedM;
            for (int g = 0; g < p.Groups; g++) AddChunks(g, g * p.MMax, masked[g], ref count, chunks);
        }
    }

    private static void AddChunks(int g, int start, int rows, ref int count, int[]? chunks)
    {
        int n = ChunksOf(rows);
        for (int c = 0; c < n; c++)
        {
            if (chunks is not null)
            {
                int first = start + c * MaxChunkRows;
                chunks[count * 3] = g;
                chunks[count * 3 + 1] = first;
                chunks[count * 3 + 2] = Math.Min(MaxChunkRows, start + rows - first);
            }
            count++;
        }
    }

    private static void RunItem(in Fp8GroupedProblem p, int[] chunks, int chunk, int nBlock)
    {
        int g = chunks[chunk * 3], row0 = chunks[chunk * 3 + 1], rows = chunks[chunk * 3 + 2];
        int n0 = nBlock * Block, nb = Math.Min(Block, p.N - n0);
        int kBlocks = (p.K + Block - 1) / Block, nBlocks = (p.N + Block - 1) / Block;
        float[] scratch = t_scratch ??= new float[4 * Block * Block + 2 * Block];
        fixed (float* s = scratch)
        {
            float* dTile = s;                       // [128 rows][128 cols] FP32 accumulators
            float* aBlock = s + Block * Block;      // [128 rows][128 k] widened A (unscaled)
            float* bPanel = s + 2 * Block * Block;  // [128 k][128 n] widened, transposed B (large path)
            float* bRow = s + 4 * Block * Block;    // one widened B row block (small path)
            new Span<float>(dTile, rows * Block).Clear();
            byte* a = (byte*)p.A + (long)row0 * p.K;
            float* aScales = (float*)p.AScales + (long)row0 * kBlocks;
            byte* b = (byte*)p.B + ((long)g * p.N + n0) * p.K;
            float* bScales = (float*)p.BScales + ((long)g * nBlocks + nBlock) * kBlocks;
            for (int kb = 0; kb < kBlocks; kb++)
            {
                int k0 = kb * Block, kw = Math.Min(Block, p.K - k0), kw8 = (kw + 7) & ~7;
                for (int r = 0; r < rows; r++)
                {
                    Widen(a + (long)r * p.K + k0, aBlock + r * Block, kw);
                    for (int x = kw; x < kw8; x++) aBlock[r * Block + x] = 0;
                }
                float sb = bScales[kb];
                if (rows < SmallRows)
                    SmallPath(b + k0, p.K, nb, kw, kw8, aBlock, rows, aScales + kb, kBlocks, sb, bRow, dTile);
                else
                    LargePath(b + k0, p.K, nb, kw, aBlock, rows, aScales + kb, kBlocks, sb, bPanel, dTile);
            }
            WriteTile(p, dTile, row0, rows, n0, nb);
        }
    }

    /// <summary>Per weight row: widen its K block once, dot it with up to 4 activation rows at a time.</summary>
    private static void SmallPath(byte* b, int k, int nb, int kw, int kw8, float* aBlock, int rows, float* aScales, int kBlocks, float sb, float* bRow, float* dTile)
    {
        for (int n = 0; n < nb; n++)
        {
            Widen(b + (long)n * k, bRow, kw);
            for (int x = kw; x < kw8; x++) bRow[x] = 0;
            int r = 0;
            for (; r + 4 <= rows; r += 4)
            {
                var c0 = Vector256<float>.Zero; var c1 = c0; var c2 = c0; var c3 = c0;
                float* a0 = aBlock + r * Block;
                for (int x = 0; x < kw8; x += 8)
                {
                    var bv = Vector256.Load(bRow + x);
                    c0 = Vector256.FusedMultiplyAdd(Vector256.Load(a0 + x), bv, c0);
                    c1 = Vector256.FusedMultiplyAdd(Vector256.Load(a0 + Block + x), bv, c1);
                    c2 = Vector256.FusedMultiplyAdd(Vector256.Load(a0 + 2 * Block + x), bv, c2);
                    c3 = Vector256.FusedMultiplyAdd(Vector256.Load(a0 + 3 * Block + x), bv, c3);
                }
                dTile[r * Block + n] += Vector256.Sum(c0) * (aScales[r * kBlocks] * sb);
                dTile[(r + 1) * Block + n] += Vector256.Sum(c1) * (aScales[(r + 1) * kBlocks] * sb);
                dTile[(r + 2) * Block + n] += Vector256.Sum(c2) * (aScales[(r + 2) * kBlocks] * sb);
                dTile[(r + 3) * Block + n] += Vector256.Sum(c3) * (aScales[(r + 3) * kBlocks] * sb);
            }
            for (; r < rows; r++)
            {
                var c = Vector256<float>.Zero;
                float* a0 = aBlock + r * Block;
                for (int x = 0; x < kw8; x += 8) c = Vector256.FusedMultiplyAdd(Vector256.Load(a0 + x), Vector256.Load(bRow + x), c);
                dTile[r * Block + n] += Vector256.Sum(c) * (aScales[r * kBlocks] * sb);
            }
        }
    }

    /// <summary>Widens and transposes the B block once, then runs a 4x16 register-blocked kernel.</summary>
    private static void LargePath(byte* b, int k, int nb, int kw, float* aBlock, int rows, float* aScales, int kBlocks, float sb, float* bPanel, float* dTile)
    {
        float* widened = bPanel + Block * Block; // one row, borrowed from the small-path buffer area
        int nb16 = (nb + 15) & ~15;
        for (int n = 0; n < nb; n++)
        {
            Widen(b + (long)n * k, widened, kw);
            for (int x = 0; x < kw; x++) bPanel[x * Block + n] = widened[x];
        }
        for (int n = nb; n < nb16; n++)
            for (int x = 0; x < kw; x++) bPanel[x * Block + n] = 0;

        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* a0 = aBlock + r * Block;
            var s0 = Vector256.Create(aScales[r * kBlocks] * sb);
            var s1 = Vector256.Create(aScales[(r + 1) * kBlocks] * sb);
            var s2 = Vector256.Create(aScales[(r + 2) * kBlocks] * sb);
            var s3 = Vector256.Create(aScales[(r + 3) * kBlocks] * sb);
            for (int n = 0; n < nb16; n += 16)
            {
                var c00 = Vector256<float>.Zero; var c01 = c00; var c10 = c00; var c11 = c00;
                var c20 = c00; var c21 = c00; var c30 = c00; var c31 = c00;
                float* bp = bPanel + n;
                for (int x = 0; x < kw; x++, bp += Block)
                {
                    var b0 = Vector256.Load(bp);
                    var b1 = Vector256.Load(bp + 8);
                    var v = Vector256.Create(a0[x]);
                    c00 = Vector256.FusedMultiplyAdd(v, b0, c00); c01 = Vector256.FusedMultiplyAdd(v, b1, c01);
                    v = Vector256.Create(a0[Block + x]);
                    c10 = Vector256.FusedMultiplyAdd(v, b0, c10); c11 = Vector256.FusedMultiplyAdd(v, b1, c11);
                    v = Vector256.Create(a0[2 * Block + x]);
                    c20 = Vector256.FusedMultiplyAdd(v, b0, c20); c21 = Vector256.FusedMultiplyAdd(v, b1, c21);
                    v = Vector256.Create(a0[3 * Block + x]);
                    c30 = Vector256.FusedMultiplyAdd(v, b0, c30); c31 = Vector256.FusedMultiplyAdd(v, b1, c31);
                }
                float* d = dTile + r * Block + n;
                Promote(d, c00, c01, s0);
                Promote(d + Block, c10, c11, s1);
                Promote(d + 2 * Block, c20, c21, s2);
                Promote(d + 3 * Block, c30, c31, s3);
            }
        }
        for (; r < rows; r++)
        {
            float* a0 = aBlock + r * Block;
            var s0 = Vector256.Create(aScales[r * kBlocks] * sb);
            for (int n = 0; n < nb16; n += 16)
            {
                var c0 = Vector256<float>.Zero; var c1 = c0;
                float* bp = bPanel + n;
                for (int x = 0; x < kw; x++, bp += Block)
                {
                    var v = Vector256.Create(a0[x]);
                    c0 = Vector256.FusedMultiplyAdd(v, Vector256.Load(bp), c0);
                    c1 = Vector256.FusedMultiplyAdd(v, Vector256.Load(bp + 8), c1);
                }
                Promote(dTile + r * Block + n, c0, c1, s0);
            }
        }
    }

    /// <summary>DeepSeek-V3 promotion: accumulator += block partial sum * (sa * sb).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Promote(float* d, Vector256<float> c0, Vector256<float> c1, Vector256<float> scale)
    {
        Vector256.FusedMultiplyAdd(c0, scale, Vector256.Load(d)).Store(d);
        Vector256.FusedMultiplyAdd(c1, scale, Vector256.Load(d + 8)).Store(d + 8);
    }

    private static void WriteTile(in Fp8GroupedProblem p, float* dTile, int row0, int rows, int n0, int nb)
    {
        for (int r = 0; r < rows; r++)
        {
            long offset = (long)(row0 + r) * p.N + n0;
            var source = new ReadOnlySpan<float>(dTile + r * Block, nb);
            if (!p.DIsBFloat16)
            {
                source.CopyTo(new Span<float>((float*)p.D + offset, nb));
                continue;
            }
            ushort* d = (ushort*)p.D + offset;
            for (int n = 0; n < nb; n++) d[n] = BFloat16.ToRaw(source[n]);
        }
    }
}
