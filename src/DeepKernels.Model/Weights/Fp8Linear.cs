using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Weights;

/// <summary>
/// A projection y = x W^T with W stored as FP8 E4M3 [out, in] and one FP32 <c>weight_scale_inv</c>
/// per 128x128 block, exactly as DeepSeek-V3 checkpoints store it. The forward pass follows the
/// numerics contract: activations are quantized per 1x128 group, each 128-wide K block's dot
/// product is scaled by sa * sw and summed in FP32. Rows are computed independently, so a token's
/// output does not depend on which other tokens share the call.
/// </summary>
public sealed class Fp8Linear : IDisposable
{
    private readonly IDisposable[] _owned;

    internal Fp8Linear(string name, TensorBuffer weight, TensorBuffer scaleInv)
        : this(name, weight.View, scaleInv.View) => _owned = [weight, scaleInv];

    /// <summary>A projection over views of memory owned elsewhere (e.g. one expert of a stacked MoE tensor).</summary>
    internal Fp8Linear(string name, TensorView weight, TensorView scaleInv)
    {
        Name = name;
        Weight = weight;
        ScaleInv = scaleInv;
        OutFeatures = checked((int)weight.Dim(0));
        InFeatures = checked((int)weight.Dim(1));
        _owned = [];
    }

    /// <summary>Checkpoint name of the weight.</summary>
    public string Name { get; }

    /// <summary>N: output features (rows of W).</summary>
    public int OutFeatures { get; }

    /// <summary>K: input features (columns of W).</summary>
    public int InFeatures { get; }

    /// <summary>FP8 codes [N, K].</summary>
    public TensorView Weight { get; }

    /// <summary>FP32 [ceil(N/128), ceil(K/128)].</summary>
    public TensorView ScaleInv { get; }

    /// <summary>Bytes of weights and scales.</summary>
    public long Bytes => Weight.ByteCount + ScaleInv.ByteCount;

    /// <summary>Parameters.</summary>
    public long Parameters => (long)OutFeatures * InFeatures;

    /// <summary>Workspace floats <see cref="Forward"/> needs for <paramref name="rows"/> rows.</summary>
    public int ScratchFloats(int rows) => rows * ActivationQuantization.GroupCount(InFeatures) + (rows * InFeatures + 3) / 4;

    /// <summary>
    /// y[rows, N] = x[rows, K] W^T: activations are quantized per 1x128 group, then the FP8
    /// block-scaled GEMM (<see cref="Fp8Gemm"/>) runs on the codes and scales as they are.
    /// <paramref name="scratch"/> must hold <see cref="ScratchFloats"/> floats.
    /// </summary>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch)
    {
        int k = InFeatures, n = OutFeatures, groups = ActivationQuantization.GroupCount(k);
        Guard.Length(x.Length, (long)rows * k, nameof(x));
        Guard.Length(y.Length, (long)rows * n, nameof(y));
        Guard.AtLeast(scratch.Length, ScratchFloats(rows), nameof(scratch));
        if (rows == 0) return;
        var sa = scratch[..(rows * groups)];
        var codes = System.Runtime.InteropServices.MemoryMarshal.Cast<float, Float8E4M3>(scratch[(rows * groups)..])[..(rows * k)];
        ActivationQuantization.Quantize(x, k, codes, sa);
        Fp8Gemm.Run(codes, sa, Weight.AsSpan<Float8E4M3>(), ScaleInv.AsSpan<float>(), y, rows, n, k);
    }

    /// <summary>The dequantized weight as float64 [N*K] (for references and absorption).</summary>
    public double[] DequantizeToDouble()
    {
        var w = Weight.AsSpan<byte>();
        var s = ScaleInv.AsSpan<float>();
        int k = InFeatures, kBlocks = ActivationQuantization.GroupCount(k);
        var result = new double[(long)OutFeatures * k];
        for (int j = 0; j < OutFeatures; j++)
            for (int c = 0; c < k; c++)
                result[(long)j * k + c] = (double)Float8E4M3.ToSingle(w[j * k + c]) * s[(j / 128) * kBlocks + c / 128];
        return result;
    }

    /// <summary>Frees the buffers.</summary>
    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
