using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IMlaCacheWriteBackend
{
    void IMlaCacheWriteBackend.WriteLatents(in MlaCacheWriteArgs args)
    {
        const int D = LatentCacheFormat.HeadDim;
        var a = args;
        int bytesPerToken = LatentCacheFormat.BytesPerToken(args.Layout);
        Parallel.For(0, args.Slots.Length, ParallelOptions, () => new float[D], (i, _, row) =>
        {
            if (a.Latents.DType == DType.Float32)
                a.Latents.AsSpan<float>().Slice(i * D, D).CopyTo(row);
            else
            {
                var bf = a.Latents.AsSpan<ushort>().Slice(i * D, D);
                for (int j = 0; j < D; j++) row[j] = BFloat16.ToSingle(bf[j]);
            }
            var record = TokenRecord(a.Storage, a.Slots[i], bytesPerToken);
            LatentRecord.Encode(row, a.Layout, record);
            return row;
        }, _ => { });
    }

    private static unsafe Span<byte> TokenRecord(TensorView storage, long slot, int bytesPerToken) =>
        new((byte*)storage.Data + slot * bytesPerToken, bytesPerToken);
}
