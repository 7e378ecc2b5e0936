using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

/// <summary>
/// CPU MLA decode. Work items are (chunk of the schedule, head group); a worker walks its
/// chunk page by page, widens each page's tokens to FP32 once and runs every query row of its
/// head group (s_q x heads) against it: Q·K^T in 4x2 register blocks of Vector256 FMAs, online
/// softmax in FP32, then P·V in 4-row x 16-column register blocks. Head groups hold at most
/// <see cref="MlaRowsPerGroup"/> query rows so the accumulators stay in L1/L2; with fewer
/// rows than that all heads share one pass over the page.
/// </summary>
public sealed partial class CpuBackend : IMlaDecodeBackend
{
    private const int MlaRowsPerGroup = 32;

    int IMlaDecodeBackend.MlaWorkers => MaxThreads;

    // One workspace per thread, reused across calls and layers while the shape fits.
    [ThreadStatic]
    private static MlaWorkspace? t_mlaWorkspace;

    private static MlaWorkspace RentMlaWorkspace(int rows, int pageSize)
    {
        var ws = t_mlaWorkspace;
        if (ws is null || ws.Rows < rows || ws.PageSize < pageSize)
            t_mlaWorkspace = ws = new MlaWorkspace(Math.Max(rows, ws?.Rows ?? 0), Math.Max(pageSize, ws?.PageSize ?? 0));
        return ws;
    }

    private sealed class MlaWorkspace(int rows, int pageSize)
    {
        public readonly int Rows = rows;
        public readonly int PageSize = pageSize;
        public readonly float[] Q = new float[rows * LatentCacheFormat.HeadDim];
        public readonly float[] K = new float[pageSize * LatentCacheFormat.HeadDim];
        public readonly float[] S = new float[rows * pageSize];
        public readonly float[] Acc = new float[rows * LatentCacheFormat.LatentDim];
        public readonly float[] M = new float[rows];
        public readonly float[] L = new float[rows];
        public readonly int[] Limit = new int[rows];
    }

    void IMlaDecodeBackend.MlaDecode(in MlaDecodeArgs args)
    {
        const int Lat = LatentCacheFormat.LatentDim;
        var a = args;
        var sch = a.Schedule;
        int sQ = a.SQ, hQ = a.HQ;
        int heads = HeadsPerGroup(hQ, sQ);
        int groups = hQ / heads;
        int rows = heads * sQ;

        // Partial results only for chunks of split sequences; single-chunk sequences write the output directly.
        int chunks = sch.NumChunks;
        var slot = new int[chunks];
        int splitChunks = 0;
        for (int b = 0; b < a.Batch; b++)
        {
            int c0 = sch.SequenceChunkOffsets[b], c1 = sch.SequenceChunkOffsets[b + 1];
            for (int c = c0; c < c1; c++) slot[c] = c1 - c0 > 1 ? splitChunks++ : -1;
        }
        int perChunk = sQ * hQ;
        float[] partialOut = splitChunks == 0 ? [] : new float[(long)splitChunks * perChunk * Lat];
        float[] partialLse = new float[splitChunks * perChunk];

        Parallel.For(0, chunks * groups, ParallelOptions, item =>
        {
            int c = item / groups, g = item % groups;
            MlaChunk(a, RentMlaWorkspace(rows, a.PageSize), c, g * heads, heads, slot[c], partialOut, partialLse);
        });

        // Empty sequences (no chunk) and the merge of split sequences.
        Parallel.For(0, a.Batch, ParallelOptions, b =>
        {
            int c0 = sch.SequenceChunkOffsets[b], c1 = sch.SequenceChunkOffsets[b + 1];
            if (c1 - c0 == 1) return;
            Span<float> row = stackalloc float[Lat];
            for (int s = 0; s < sQ; s++)
            {
                for (int h = 0; h < hQ; h++)
                {
                    float max = float.NegativeInfinity;
                    for (int c = c0; c < c1; c++) max = MathF.Max(max, partialLse[slot[c] * perChunk + s * hQ + h]);
                    row.Clear();
                    float lse = float.PositiveInfinity;
                    if (!float.IsNegativeInfinity(max))
                    {
                        double sum = 0;
                        for (int c = c0; c < c1; c++) sum += Math.Exp(partialLse[slot[c] * perChunk + s * hQ + h] - max);
                        lse = max + (float)Math.Log(sum);
                        for (int c = c0; c < c1; c++)
                        {
                            float w = MathF.Exp(partialLse[slot[c] * perChunk + s * hQ + h] - lse);
                            if (w == 0) continue;
                            var part = partialOut.AsSpan((int)(((long)slot[c] * perChunk + s * hQ + h) * Lat), Lat);
                            TensorPrimitives.MultiplyAdd(part, w, row, row);
                        }
                    }
                    WriteRow(a, b, s, h, row, lse);
                }
            }
        });
    }

    /// <summary>Largest divisor of h_q whose rows (heads x s_q) fit <see cref="MlaRowsPerGroup"/> (at least one head).</summary>
    internal static int HeadsPerGroup(int hQ, int sQ)
    {
        int max = Math.Max(1, MlaRowsPerGroup / sQ);
        for (int g = Math.Min(hQ, max); g > 1; g--)
            if (hQ % g == 0) return g;
        return 1;
    }

    private static void WriteRow(in MlaDecodeArgs a, int b, int s, int h, ReadOnlySpan<float> values, float lse)
    {
        const int Lat = LatentCacheFormat.LatentDim;
        long offset = (((long)b * a.SQ + s) * a.HQ + h) * Lat;
        if (a.Output.DType == DType.Float32)
            values.CopyTo(a.Output.AsSpan<float>().Slice((int)offset, Lat));
        else
        {
            var dst = a.Output.AsSpan<ushort>().Slice((int)offset, Lat);
            for (int i = 0; i < Lat; i++) dst[i] = BFloat16.ToRaw(values[i]);
        }
        a.Lse.AsSpan<float>()[(b * a.HQ + h) * a.SQ + s] = lse;
    }

    private static unsafe void MlaChunk(in MlaDecodeArgs a, MlaWorkspace ws, int chunk, int head0, int heads, int slot, float[] partialOut, float[] partialLse)
    {
        const int D = LatentCacheFormat.HeadDim, Lat = LatentCacheFormat.LatentDim;
        var sch = a.Schedule;
        int b = sch.ChunkBatch[chunk], t0 = sch.ChunkStart[chunk], t1 = sch.ChunkEnd[chunk];
        int seqlen = a.Seqlens[b], sQ = a.SQ, hQ = a.HQ, rows = heads * sQ, P = a.PageSize;

        // Query rows r = s * heads + hh, pre-multiplied by the softmax scale.
        int maxLimit = -1;
        for (int s = 0; s < sQ; s++)
        {
            for (int hh = 0; hh < heads; hh++)
            {
                int r = s * heads + hh;
                long qOffset = (((long)b * sQ + s) * hQ + head0 + hh) * D;
                var dst = ws.Q.AsSpan(r * D, D);
                if (a.Q.DType == DType.Float32)
                {
                    // FP32 queries are rounded to BF16 first, as the CUDA kernels feed them to BF16 tensor cores.
                    var src = a.Q.AsSpan<float>().Slice((int)qOffset, D);
                    for (int i = 0; i < D; i++) dst[i] = RoundToBf16(src[i]) * a.SoftmaxScale;
                }
                else
                {
                    var src = a.Q.AsSpan<ushort>().Slice((int)qOffset, D);
                    for (int i = 0; i < D; i++) dst[i] = BFloat16.ToSingle(src[i]) * a.SoftmaxScale;
                }
                ws.Limit[r] = a.Causal ? seqlen - sQ + s : seqlen - 1; // last visible key, inclusive
                maxLimit = Math.Max(maxLimit, ws.Limit[r]);
            }
        }
        ws.M.AsSpan(0, rows).Fill(float.NegativeInfinity);
        ws.L.AsSpan(0, rows).Clear();
        ws.Acc.AsSpan(0, rows * Lat).Clear();
        int end = Math.Min(t1, maxLimit + 1); // keys no row can see are never read
        int bytesPerToken = LatentCacheFormat.BytesPerToken(a.Layout);
        var table = a.BlockTable.AsSpan<int>();

        fixed (float* q = ws.Q, k = ws.K, scores = ws.S, acc = ws.Acc)
        {
            for (int pos = t0; pos < end;)
            {
                int blockIdx = pos / P;
                int page = table[b * a.MaxPages + blockIdx];
                int stop = Math.Min(end, (blockIdx + 1) * P);
                int n = stop - pos;
                byte* record = (byte*)a.Cache.Data + ((long)page * P + pos % P) * bytesPerToken;
                for (int j = 0; j < n; j++)
                    WidenToken(record + (long)j * bytesPerToken, a.Layout, k + j * D);

                MlaScores(q, rows, k, n, scores, P);
                for (int r = 0; r < rows; r++)
                {
                    var sRow = new Span<float>(scores + r * P, n);
                    int visible = Math.Clamp(ws.Limit[r] - pos + 1, 0, n);
                    sRow[visible..].Fill(float.NegativeInfinity);
                    float mOld = ws.M[r];
                    float mNew = visible == 0 ? mOld : MathF.Max(mOld, TensorPrimitives.Max(sRow[..visible]));
                    if (float.IsNegativeInfinity(mNew))
                    {
                        sRow.Clear(); // nothing visible yet: all probabilities are 0
                        continue;
                    }
                    TensorPrimitives.Subtract(sRow, mNew, sRow);
                    TensorPrimitives.Exp(sRow, sRow);
                    float alpha = MathF.Exp(mOld - mNew); // 0 when mOld = -inf
                    ws.L[r] = ws.L[r] * alpha + TensorPrimitives.Sum(sRow);
                    ws.M[r] = mNew;
                    // P V takes the probabilities rounded to BF16 (the row sum above does not),
                    // exactly as the CUDA kernels' BF16 tensor-core products do.
                    RoundToBf16(sRow[..visible]);
                    if (alpha != 1f) TensorPrimitives.Multiply(new Span<float>(acc + r * Lat, Lat), alpha, new Span<float>(acc + r * Lat, Lat));
                }
                MlaAccumulate(scores, P, rows, k, n, acc);
                pos = stop;
            }
        }

        Span<float> row = stackalloc float[Lat];
        for (int s = 0; s < sQ; s++)
        {
            for (int hh = 0; hh < heads; hh++)
            {
                int r = s * heads + hh, h = head0 + hh;
                float lse;
                if (ws.L[r] == 0)
                {
                    row.Clear();
                    lse = float.NegativeInfinity;
                }
                else
                {
                    TensorPrimitives.Multiply(ws.Acc.AsSpan(r * Lat, Lat), 1f / ws.L[r], row);
                    lse = ws.M[r] + MathF.Log(ws.L[r]);
                }
                if (slot < 0)
                {
                    WriteRow(a, b, s, h, row, float.IsNegativeInfinity(lse) ? float.PositiveInfinity : lse);
                }
                else
                {
                    long index = (long)slot * sQ * hQ + s * hQ + h;
                    row.CopyTo(partialOut.AsSpan((int)(index * Lat), Lat));
                    partialLse[index] = lse;
                }
            }
        }
    }

    /// <summary>Widens one cache record to 576 floats (BF16 exact, FP8 times its group scale).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void WidenToken(byte* record, LatentCacheLayout layout, float* dst)
    {
        const int Lat = LatentCacheFormat.LatentDim, D = LatentCacheFormat.HeadDim;
        if (layout == LatentCacheLayout.BFloat16)
        {
            WidenBf16((ushort*)record, dst, D);
            return;
        }
        float* scales = (float*)(record + LatentCacheFormat.Fp8ScalesOffset);
        fixed (float* table = Float8E4M3.DecodedValues)
        {
            for (int g = 0; g < LatentCacheFormat.Fp8Groups; g++)
            {
                float scale = scales[g];
                byte* src = record + g * LatentCacheFormat.Fp8GroupSize;
                float* d = dst + g * LatentCacheFormat.Fp8GroupSize;
                if (Avx2.IsSupported)
                {
                    var vs = Vector256.Create(scale);
                    for (int i = 0; i < LatentCacheFormat.Fp8GroupSize; i += 8)
                    {
                        var idx = Avx2.ConvertToVector256Int32(src + i);
                        Vector256.Store(Avx2.GatherVector256(table, idx, 4) * vs, d + i);
                    }
                }
                else
                {
                    for (int i = 0; i < LatentCacheFormat.Fp8GroupSize; i++) d[i] = table[src[i]] * scale;
                }
                // FP8 pages are dequantized to BF16 (c_kv = e4m3 * scale, rounded), as on the device.
                RoundToBf16(new Span<float>(d, LatentCacheFormat.Fp8GroupSize));
            }
        }
        WidenBf16((ushort*)(record + LatentCacheFormat.Fp8RopeOffset), dst + Lat, LatentCacheFormat.RopeDim);
    }

    /// <summary>x rounded to the nearest BF16 value (ties to even), as a float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RoundToBf16(float x) => BFloat16.ToSingle(BFloat16.ToRaw(x));

    /// <summary>
    /// Every value rounded to the nearest BF16 (ties to even) in place: add 0x7FFF plus the
    /// lowest kept bit, clear the low half. Exact for all non-NaN floats (overflow rounds to
    /// infinity as it should); NaN lanes are kept as they are.
    /// </summary>
    private static void RoundToBf16(Span<float> values)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var bits = MemoryMarshal.Cast<float, uint>(values);
            for (; i + 8 <= values.Length; i += 8)
            {
                var v = Vector256.Create(bits.Slice(i, 8));
                var rounded = (v + Vector256.Create(0x7FFFu) + ((v >> 16) & Vector256<uint>.One)) & Vector256.Create(0xFFFF_0000u);
                var f = v.AsSingle();
                var keep = Vector256.Equals(f, f).AsUInt32(); // false only for NaN
                Vector256.ConditionalSelect(keep, rounded, v).CopyTo(bits.Slice(i, 8));
            }
        }
        for (; i < values.Length; i++) values[i] = RoundToBf16(values[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void WidenBf16(ushort* src, float* dst, int count)
    {
        int i = 0;
        for (; i + 16 <= count; i += 16)
        {
            var v = Vector256.Load(src + i);
            var (lo, hi) = Vector256.Widen(v);
            Vector256.Store(Vector256.ShiftLeft(lo, 16).AsSingle(), dst + i);
            Vector256.Store(Vector256.ShiftLeft(hi, 16).AsSingle(), dst + i + 8);
        }
        for (; i < count; i++) dst[i] = BFloat16.ToSingle(src[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fmadd(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    /// <summary>scores[r * ld + j] = q_r · k_j over 576 values, for r &lt; rows and j &lt; n.</summary>
    private static unsafe void MlaScores(float* q, int rows, float* k, int n, float* scores, int ld)
    {
        const int D = LatentCacheFormat.HeadDim;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* q0 = q + r * D, q1 = q0 + D, q2 = q1 + D, q3 = q2 + D;
            int j = 0;
            for (; j + 2 <= n; j += 2)
            {
                float* k0 = k + j * D, k1 = k0 + D;
                Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
                Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
                for (int d = 0; d < D; d += 8)
                {
                    var kv0 = Vector256.Load(k0 + d);
                    var kv1 = Vector256.Load(k1 + d);
                    var qv = Vector256.Load(q0 + d);
                    a00 = Fmadd(qv, kv0, a00); a01 = Fmadd(qv, kv1, a01);
                    qv = Vector256.Load(q1 + d);
                    a10 = Fmadd(qv, kv0, a10); a11 = Fmadd(qv, kv1, a11);
                    qv = Vector256.Load(q2 + d);
                    a20 = Fmadd(qv, kv0, a20); a21 = Fmadd(qv, kv1, a21);
                    qv = Vector256.Load(q3 + d);
                    a30 = Fmadd(qv, kv0, a30); a31 = Fmadd(qv, kv1, a31);
                }
                scores[r * ld + j] = Vector256.Sum(a00); scores[r * ld + j + 1] = Vector256.Sum(a01);
                scores[(r + 1) * ld + j] = Vector256.Sum(a10); scores[(r + 1) * ld + j + 1] = Vector256.Sum(a11);
                scores[(r + 2) * ld + j] = Vector256.Sum(a20); scores[(r + 2) * ld + j + 1] = Vector256.Sum(a21);
                scores[(r + 3) * ld + j] = Vector256.Sum(a30); scores[(r + 3) * ld + j + 1] = Vector256.Sum(a31);
            }
            for (; j < n; j++)
            {
                for (int rr = r; rr < r + 4; rr++) scores[rr * ld + j] = Dot576(q + rr * D, k + j * D);
            }
        }
        for (; r < rows; r++)
        {
            for (int j = 0; j < n; j++) scores[r * ld + j] = Dot576(q + r * D, k + j * D);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float Dot576(float* x, float* y)
    {
        Vector256<float> s0 = default, s1 = default;
        for (int d = 0; d < LatentCacheFormat.HeadDim; d += 16)
        {
            s0 = Fmadd(Vector256.Load(x + d), Vector256.Load(y + d), s0);
            s1 = Fmadd(Vector256.Load(x + d + 8), Vector256.Load(y + d + 8), s1);
        }
        return Vector256.Sum(s0 + s1);
    }

    /// <summary>acc[r, :512] += sum_j p[r * ld + j] * k_j[:512] (V is the first 512 values of K).</summary>
    private static unsafe void MlaAccumulate(float* p, int ld, int rows, float* k, int n, float* acc)
    {
        const int D = LatentCacheFormat.HeadDim, Lat = LatentCacheFormat.LatentDim;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* p0 = p + r * ld, p1 = p0 + ld, p2 = p1 + ld, p3 = p2 + ld;
            for (int c = 0; c < Lat; c += 16)
            {
                float* a0 = acc + r * Lat + c, a1 = a0 + Lat, a2 = a1 + Lat, a3 = a2 + Lat;
                Vector256<float> x00 = Vector256.Load(a0), x01 = Vector256.Load(a0 + 8);
                Vector256<float> x10 = Vector256.Load(a1), x11 = Vector256.Load(a1 + 8);
                Vector256<float> x20 = Vector256.Load(a2), x21 = Vector256.Load(a2 + 8);
                Vector256<float> x30 = Vector256.Load(a3), x31 = Vector256.Load(a3 + 8);
                for (int j = 0; j < n; j++)
                {
                    float* v = k + j * D + c;
                    var v0 = Vector256.Load(v);
                    var v1 = Vector256.Load(v + 8);
                    var w = Vector256.Create(p0[j]);
                    x00 = Fmadd(w, v0, x00); x01 = Fmadd(w, v1, x01);
                    w = Vector256.Create(p1[j]);
                    x10 = Fmadd(w, v0, x10); x11 = Fmadd(w, v1, x11);
                    w = Vector256.Create(p2[j]);
                    x20 = Fmadd(w, v0, x20); x21 = Fmadd(w, v1, x21);
                    w = Vector256.Create(p3[j]);
                    x30 = Fmadd(w, v0, x30); x31 = Fmadd(w, v1, x31);
                }
                Vector256.Store(x00, a0); Vector256.Store(x01, a0 + 8);
                Vector256.Store(x10, a1); Vector256.Store(x11, a1 + 8);
                Vector256.Store(x20, a2); Vector256.Store(x21, a2 + 8);
                Vector256.Store(x30, a3); Vector256.Store(x31, a3 + 8);
            }
        }
        for (; r < rows; r++)
        {
            float* pr = p + r * ld;
            for (int c = 0; c < Lat; c += 32)
            {
                float* a0 = acc + r * Lat + c;
                Vector256<float> x0 = Vector256.Load(a0), x1 = Vector256.Load(a0 + 8), x2 = Vector256.Load(a0 + 16), x3 = Vector256.Load(a0 + 24);
                for (int j = 0; j < n; j++)
                {
                    float* v = k + j * D + c;
                    var w = Vector256.Create(pr[j]);
                    x0 = Fmadd(w, Vector256.Load(v), x0);
                    x1 = Fmadd(w, Vector256.Load(v + 8), x1);
                    x2 = Fmadd(w, Vector256.Load(v + 16), x2);
                    x3 = Fmadd(w, Vector256.Load(v + 24), x3);
                }
                Vector256.Store(x0, a0); Vector256.Store(x1, a0 + 8); Vector256.Store(x2, a0 + 16); Vector256.Store(x3, a0 + 24);
            }
        }
    }
}
