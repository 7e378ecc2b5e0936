using System.Numerics.Tensors;
using DeepKernels.Backends;
using DeepKernels.Formats;

namespace DeepKernels.Model.Weights;

/// <summary>
/// A projection with BF16 weights [out, in] computed in FP32 (lm_head, the MoE router gate):
/// weights are widened exactly and dotted with FP32 activations.
/// </summary>
public sealed class Bf16Linear : IDisposable
{
    internal Bf16Linear(string name, TensorBuffer weight)
    {
        Name = name;
        Weight = weight;
        OutFeatures = checked((int)weight.View.Dim(0));
        InFeatures = checked((int)weight.View.Dim(1));
    }

    /// <summary>Checkpoint name.</summary>
    public string Name { get; }

    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }

    /// <summary>BF16 [N, K].</summary>
    public TensorBuffer Weight { get; }

    /// <summary>Bytes of weights.</summary>
    public long Bytes => Weight.View.ByteCount;

    /// <summary>y[rows, N] = x[rows, K] W^T.</summary>
    public unsafe void Forward(ReadOnlySpan<float> x, int rows, Span<float> y)
    {
        int k = InFeatures, n = OutFeatures;
        Guard.Length(x.Length, (long)rows * k, nameof(x));
        Guard.Length(y.Length, (long)rows * n, nameof(y));
        if (rows == 0) return;
        fixed (float* px = x, py = y)
        {
            float* xp = px, yp = py;
            ushort* w = (ushort*)Weight.View.Data;
            int chunk = Math.Max(1, n / (Environment.ProcessorCount * 4));
            int tasks = (n + chunk - 1) / chunk;
            void Work(int task)
            {
                float[] row = new float[k];
                int n0 = task * chunk, n1 = Math.Min(n, n0 + chunk);
                for (int j = n0; j < n1; j++)
                {
                    BFloat16.ToSingle(new ReadOnlySpan<ushort>(w + (long)j * k, k), row);
                    for (int r = 0; r < rows; r++)
                        yp[(long)r * n + j] = TensorPrimitives.Dot(row, new ReadOnlySpan<float>(xp + (long)r * k, k));
                }
            }
            if ((long)rows * n * k < 1 << 16) for (int t = 0; t < tasks; t++) Work(t);
            else Parallel.For(0, tasks, Work);
        }
    }

    /// <summary>Frees the buffer.</summary>
    public void Dispose() => Weight.Dispose();
}
