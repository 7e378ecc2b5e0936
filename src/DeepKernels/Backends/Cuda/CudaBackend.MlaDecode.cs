using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IMlaDecodeBackend, IMlaCacheWriteBackend
{
    /// <summary>
    /// Split-KV decode: <c>dk_mla_decode_split(q, q_bf16, cache, cache_fp8, page_size, block_table,
    /// max_pages, seqlens, chunks, num_chunks, softmax_scale, causal, s_q, h_q, out_partial,
    /// lse_partial)</c> (native/kernels/mla_decode.cu).
    /// </summary>
    internal const string MlaDecodeSplitKernel = "dk_mla_decode_split";

    /// <summary>
    /// LSE merge of the chunks: <c>dk_mla_decode_combine(out_partial, lse_partial,
    /// seq_chunk_offsets, output, out_bf16, lse, batch, s_q, h_q)</c>.
    /// </summary>
    internal const string MlaDecodeCombineKernel = "dk_mla_decode_combine";

    /// <summary>Cache write: <c>dk_mla_cache_write(latents, latents_bf16, slots, cache, fp8, n)</c> (native/kernels/kv_cache_write.cu).</summary>
    internal const string MlaCacheWriteKernel = "dk_mla_cache_write";

    /// <summary>Query rows (s_q x heads) one split CTA processes.</summary>
    internal const int MlaRowsPerCta = 64;

    /// <summary>Dynamic shared memory of the split kernel (Q, two KV tiles, scores, probabilities, row state).</summary>
    internal const uint MlaSplitSharedBytes = 164096;

    int IMlaDecodeBackend.MlaWorkers => Device.MultiprocessorCount;

    void IMlaDecodeBackend.MlaDecode(in MlaDecodeArgs args)
    {
        const int Lat = LatentCacheFormat.LatentDim;
        var a = args;
        if (a.Q.Data % 16 != 0)
            throw new ArgumentException($"The CUDA MLA decode needs q 16-byte aligned, got address 0x{a.Q.Data:x}.", nameof(args));
        if (a.Cache.Data % 16 != 0)
            throw new ArgumentException($"The CUDA MLA decode needs the cache storage 16-byte aligned, got address 0x{a.Cache.Data:x}.", nameof(args));
        if (a.Batch > 65535)
            throw new ArgumentException($"The CUDA MLA decode runs at most 65535 sequences per call (grid.y), got {a.Batch}.", nameof(args));
        var schedule = a.Schedule;
        int rows = a.SQ * a.HQ, chunks = schedule.NumChunks;

        var chunkTable = new int[3 * Math.Max(chunks, 1)];
        schedule.ChunkBatch.CopyTo(chunkTable);
        schedule.ChunkStart.CopyTo(chunkTable.AsSpan(chunks));
        schedule.ChunkEnd.CopyTo(chunkTable.AsSpan(2 * chunks));
        var temps = new List<TensorBuffer>(6);
        try
        {
            var chunkView = Track(temps, Upload<int>(chunkTable, DType.Int32, chunkTable.Length)).View;
            var offsetView = Track(temps, Upload<int>(schedule.SequenceChunkOffsets, DType.Int32, a.Batch + 1)).View;
            var seqlenView = Track(temps, Upload<int>(a.Seqlens, DType.Int32, a.Batch)).View;
            var partialOut = Track(temps, Allocate(DType.Float32, Math.Max(chunks, 1), rows, Lat)).View;
            var partialLse = Track(temps, Allocate(DType.Float32, Math.Max(chunks, 1), rows)).View;
            if (chunks > 0)
            {
                LaunchKernel(MlaDecodeSplitKernel, new Dim3((uint)chunks, (uint)((rows + MlaRowsPerCta - 1) / MlaRowsPerCta)), new Dim3(256), MlaSplitSharedBytes,
                    KernelArg.Pointer(a.Q), a.Q.DType == DType.BFloat16 ? 1 : 0,
                    KernelArg.Pointer(a.Cache), a.Layout == LatentCacheLayout.Fp8 ? 1 : 0, a.PageSize,
                    KernelArg.Pointer(a.BlockTable), a.MaxPages,
                    KernelArg.Pointer(seqlenView), KernelArg.Pointer(chunkView), chunks,
                    a.SoftmaxScale, a.Causal ? 1 : 0, a.SQ, a.HQ,
                    KernelArg.Pointer(partialOut), KernelArg.Pointer(partialLse));
            }
            LaunchKernel(MlaDecodeCombineKernel, new Dim3((uint)rows, (uint)a.Batch), new Dim3(Lat / 4), 0,
                KernelArg.Pointer(partialOut), KernelArg.Pointer(partialLse), KernelArg.Pointer(offsetView),
                KernelArg.Pointer(a.Output), a.Output.DType == DType.BFloat16 ? 1 : 0, KernelArg.Pointer(a.Lse),
                a.Batch, a.SQ, a.HQ);
        }
        finally
        {
            ReleaseAfterQueuedWork(temps);
        }
    }

    void IMlaCacheWriteBackend.WriteLatents(in MlaCacheWriteArgs args)
    {
        var temps = new List<TensorBuffer>(1);
        try
        {
            var slots = Track(temps, Upload<int>(args.Slots, DType.Int32, args.Slots.Length)).View;
            LaunchKernel(MlaCacheWriteKernel, new Dim3((uint)args.Slots.Length), new Dim3(128), 0,
                KernelArg.Pointer(args.Latents), args.Latents.DType == DType.BFloat16 ? 1 : 0,
                KernelArg.Pointer(slots), KernelArg.Pointer(args.Storage), args.Layout == LatentCacheLayout.Fp8 ? 1 : 0, args.Slots.Length);
        }
        finally
        {
            ReleaseAfterQueuedWork(temps);
        }
    }

    private static TensorBuffer Track(List<TensorBuffer> temps, TensorBuffer buffer)
    {
        temps.Add(buffer);
        return buffer;
    }

    /// <summary>
    /// Frees per-call temporaries. Pool memory is freed in stream order, after the kernels that
    /// use it; plain cuMemAlloc memory only once the stream has drained.
    /// </summary>
    private void ReleaseAfterQueuedWork(List<TensorBuffer> temps)
    {
        if (temps.Count == 0) return;
        if (!UsesMemoryPool)
        {
            try
            {
                Synchronize();
            }
            catch (CudaException)
            {
                // A failed kernel is reported by the caller's own synchronisation; free anyway.
            }
        }
        foreach (var t in temps) t.Dispose();
        temps.Clear();
    }
}
