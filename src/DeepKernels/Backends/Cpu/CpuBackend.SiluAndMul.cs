using DeepKernels.Ops.Activation;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : ISiluAndMulBackend
{
    void ISiluAndMulBackend.SiluAndMul(in SiluAndMulArgs args)
    {
        int i = args.Intermediate;
        var a = args;
        for (int r = 0; r < a.Rows; r++)
        {
            var row = a.GateUp.AsSpan<float>().Slice(r * 2 * i, 2 * i);
            Ops.Activation.SiluAndMul.Core(row[..i], row[i..], a.Output.AsSpan<float>().Slice(r * i, i));
        }
    }
}
