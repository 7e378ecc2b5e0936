using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Embedding;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IEmbeddingBackend
{
    /// <summary>The kernel: <c>dk_embedding_lookup(const void* table, int table_is_bf16, const int* ids, float* out, int tokens, int h)</c>.</summary>
    internal const string EmbeddingLookupKernel = "dk_embedding_lookup";

    void IEmbeddingBackend.Gather(in EmbeddingArgs args, ReadOnlySpan<int> ids)
    {
        // EmbeddingLookup.Gather has checked every id against the vocabulary on the host; the
        // ids travel in a reused scratch buffer, copied in stream order before the launch.
        lock (_scratchLock)
        {
            var deviceIds = ScratchInts("embedding.ids", ids);
            LaunchKernel(EmbeddingLookupKernel, new Dim3((uint)ids.Length), new Dim3(NormActThreads), 0,
                KernelArg.Pointer(args.Table),
                args.Table.DType == DType.BFloat16 ? 1 : 0,
                KernelArg.Pointer(deviceIds),
                KernelArg.Pointer(args.Output),
                ids.Length,
                args.Hidden);
        }
    }
}
