using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IActivationQuantizationBackend
{
    void IActivationQuantizationBackend.QuantizeActivations(in ActivationQuantizationArgs args)
    {
        int k = args.K, groups = ActivationQuantization.GroupCount(k);
        var input = args.Input;
        bool ue8m0 = args.Scales.DType == DType.UE8M0;
        var format = ue8m0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32;
        var a = args;
        Parallel.For(0, args.M, ParallelOptions, () => new float[k], (row, _, buffer) =>
        {
            if (input.DType == DType.Float32)
                input.AsSpan<float>().Slice(row * k, k).CopyTo(buffer);
            else BFloat16.ToSingle(input.AsSpan<ushort>().Slice(row * k, k), buffer);
            for (int g = 0; g < groups; g++)
            {
                int start = g * ActivationQuantization.GroupSize;
                int length = Math.Min(ActivationQuantization.GroupSize, k - start);
                float scale = ActivationQuantization.QuantizeGroup(buffer.AsSpan(start, length), a.Output.AsSpan<Float8E4M3>().Slice(row * k + start, length), format);
                if (ue8m0) a.Scales.AsSpan<byte>()[row * groups + g] = UE8M0.FromSingleRoundUp(scale);
                else a.Scales.AsSpan<float>()[row * groups + g] = scale;
            }
            return buffer;
        }, _ => { });
    }
}
