using DeepKernels.Ops.Elementwise;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IElementwiseBackend
{
    unsafe void IElementwiseBackend.Add(in ElementwiseArgs args)
    {
        var a = args;
        float* pa = (float*)a.A.Data, po = (float*)a.Output.Data;
        float* pb = a.B is { } b ? (float*)b.Data : null;
        long saR = a.A.Stride(0), saC = a.A.Stride(1), soR = a.Output.Stride(0), soC = a.Output.Stride(1);
        long sbR = a.B?.Stride(0) ?? 0, sbC = a.B?.Stride(1) ?? 0;
        for (int r = 0; r < a.Rows; r++)
            for (int j = 0; j < a.Cols; j++)
            {
                float x = pa[r * saR + j * saC];
                po[r * soR + j * soC] = pb is null ? x : x + pb[r * sbR + j * sbC];
            }
    }
}
