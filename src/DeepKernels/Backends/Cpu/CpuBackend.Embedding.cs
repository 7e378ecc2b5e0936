using DeepKernels.Formats;
using DeepKernels.Ops.Embedding;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IEmbeddingBackend
{
    void IEmbeddingBackend.Gather(in EmbeddingArgs args, ReadOnlySpan<int> ids)
    {
        int h = args.Hidden;
        var output = args.Output.AsSpan<float>();
        if (args.Table.DType == DType.Float32)
        {
            var table = args.Table.AsSpan<float>();
            for (int t = 0; t < ids.Length; t++) table.Slice(ids[t] * h, h).CopyTo(output.Slice(t * h, h));
        }
        else
        {
            var table = args.Table.AsSpan<ushort>();
            for (int t = 0; t < ids.Length; t++) BFloat16.ToSingle(table.Slice(ids[t] * h, h), output.Slice(t * h, h));
        }
    }
}
