using DeepKernels.Formats;
using DeepKernels.Ops.Norm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IRmsNormBackend
{
    void IRmsNormBackend.RmsNorm(in RmsNormArgs args)
    {
        int h = args.Hidden;
        float[] weight = new float[h];
        if (args.Weight.DType == DType.Float32) args.Weight.AsSpan<float>().CopyTo(weight);
        else BFloat16.ToSingle(args.Weight.AsSpan<ushort>(), weight);
        var a = args;
        // Rows are independent; small batches run inline to avoid thread hand-off cost.
        if (a.Rows < 4)
        {
            for (int r = 0; r < a.Rows; r++)
                Ops.Norm.RmsNorm.Row(a.Input.AsSpan<float>().Slice(r * h, h), weight, a.Epsilon, a.Output.AsSpan<float>().Slice(r * h, h));
            return;
        }
        Parallel.For(0, a.Rows, ParallelOptions, r =>
            Ops.Norm.RmsNorm.Row(a.Input.AsSpan<float>().Slice(r * h, h), weight, a.Epsilon, a.Output.AsSpan<float>().Slice(r * h, h)));
    }
}
