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

        var chunkTable = new int[3 * chunks];
        schedule.ChunkBatch.CopyTo(chunkTable);
        schedule.ChunkStart.CopyTo(chunkTable.AsSpan(chunks));
        schedule.ChunkEnd.CopyTo(chunkTable.AsSpan(2 * chunks));
        lock (_scratchLock)
        {
            var chunkView = ScratchInts("mla.chunks", chunkTable);
            var offsetView = ScratchInts("mla.offsets", schedule.SequenceChunkOffsets);
            var seqlenView = ScratchInts("mla.seqlens", a.Seqlens);
            nint partialOut = Scratch("mla.out", (long)chunks * rows * Lat * sizeof(float));
            nint partialLse = Scratch("mla.lse", (long)chunks * rows * sizeof(float));
            if (chunks > 0 && UsesSm90Mla)
            {
                LaunchMlaSm90(a, seqlenView, chunkView, chunks, partialOut, partialLse);
            }
            else if (chunks > 0)
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
    }

    void IMlaCacheWriteBackend.WriteLatents(in MlaCacheWriteArgs args)
    {
        lock (_scratchLock)
        {
            var slots = ScratchInts("mla.slots", args.Slots);
            LaunchKernel(MlaCacheWriteKernel, new Dim3((uint)args.Slots.Length), new Dim3(128), 0,
                KernelArg.Pointer(args.Latents), args.Latents.DType == DType.BFloat16 ? 1 : 0,
                KernelArg.Pointer(slots), KernelArg.Pointer(args.Storage), args.Layout == LatentCacheLayout.Fp8 ? 1 : 0, args.Slots.Length);
        }
    }

    /// <summary>
    /// Frees temporaries. Pool memory is freed in stream order, after the kernels that use it;
    /// plain cuMemAlloc memory only once the stream has drained.
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
