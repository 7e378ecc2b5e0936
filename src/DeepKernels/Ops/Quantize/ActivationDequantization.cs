using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Quantize;

/// <summary>
/// Dequantization of per-token-group FP8 activations (the inverse of
/// <see cref="ActivationQuantization"/>): x = q * scale[row, col / 128].
/// </summary>
public static class ActivationDequantization
{
    /// <summary>
    /// Dequantizes rows of length <paramref name="k"/> with their [rows, ceil(k/128)] scales.
    /// Scales must be finite and positive.
    /// </summary>
    public static void Dequantize(ReadOnlySpan<Float8E4M3> input, ReadOnlySpan<float> scales, int k, Span<float> output)
    {
        Guard.Positive(k, nameof(k));
        if (input.Length % k != 0)
            throw new ArgumentException($"Expected {nameof(input)} length to be a multiple of k = {k}, got {input.Length}.", nameof(input));
        int rows = input.Length / k, groups = ActivationQuantization.GroupCount(k);
        Guard.Length(output.Length, input.Length, nameof(output));
        Guard.Length(scales.Length, (long)rows * groups, nameof(scales));
        Guard.AllFinitePositive(scales, nameof(scales));
        var codes = MemoryMarshal.AsBytes(input);
        for (int r = 0; r < rows; r++)
            WeightQuantization.DequantizeRow(codes.Slice(r * k, k), scales.Slice(r * groups, groups), output.Slice(r * k, k));
    }

    /// <summary>
    /// Dequantizes a [M, K] Float8E4M3 tensor with [M, ceil(K/128)] scales (Float32 or UE8M0)
    /// into a [M, K] Float32 or BFloat16 tensor.
    /// </summary>
    public static void Dequantize(Backend backend, TensorView input, TensorView scales, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(input, 2, nameof(input));
        Guard.DType(input, DType.Float8E4M3, nameof(input));
        long m = input.Dim(0), k = input.Dim(1);
        Guard.Positive(m, "M");
        Guard.Positive(k, "K");
        Guard.DType(scales, DType.Float32, DType.UE8M0, nameof(scales));
        Guard.Shape(scales, nameof(scales), m, ActivationQuantization.GroupCount(checked((int)k)));
        Guard.DType(output, DType.Float32, DType.BFloat16, nameof(output));
        Guard.Shape(output, nameof(output), m, k);
        WeightQuantization.CheckPlacement(backend, (input, nameof(input)), (scales, nameof(scales)), (output, nameof(output)));
        if (scales.Location == MemoryLocation.Host) ScaleReader.Validate(scales, nameof(scales));
        var impl = Guard.Implementation<IActivationDequantizationBackend>(backend, "FP8 activation dequantization");
        impl.DequantizeActivations(new ActivationDequantizationArgs(input, scales, output, checked((int)m), checked((int)k)));
    }
}

/// <summary>Validated arguments of <see cref="ActivationDequantization"/>.</summary>
internal readonly record struct ActivationDequantizationArgs(TensorView Input, TensorView Scales, TensorView Output, int M, int K);

/// <summary>A backend's implementation of activation dequantization.</summary>
internal interface IActivationDequantizationBackend
{
    void DequantizeActivations(in ActivationDequantizationArgs args);
}
