using DeepKernels.Ops.Rope;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IRotaryEmbeddingBackend
{
    unsafe void IRotaryEmbeddingBackend.RotaryEmbedding(in RotaryEmbeddingArgs args, ReadOnlySpan<int> positions)
    {
        var a = args;
        float* src = (float*)a.Input.Data, dst = (float*)a.Output.Data, cos = (float*)a.Cos.Data, sin = (float*)a.Sin.Data;
        long siT = a.Input.Stride(0), siH = a.Input.Stride(1), soT = a.Output.Stride(0), soH = a.Output.Stride(1);
        int half = a.Half;
        for (int t = 0; t < a.Rows; t++)
        {
            float* c = cos + (long)positions[t] * half, s = sin + (long)positions[t] * half;
            for (int h = 0; h < a.Heads; h++)
            {
                float* x = src + t * siT + h * siH, y = dst + t * soT + h * soH;
                for (int i = 0; i < half; i++)
                {
                    float x0 = x[2 * i], x1 = x[2 * i + 1];
                    y[2 * i] = x0 * c[i] - x1 * s[i];
                    y[2 * i + 1] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }
}
