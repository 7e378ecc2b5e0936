using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Quantize;

/// <summary>
/// Per-block FP8 quantization of weights [N, K] (out, in): each <see cref="BlockSize"/> x
/// <see cref="BlockSize"/> block gets scale = max(amax, 1e-4) / 448 and q = E4M3(w / scale)
/// (round to nearest even, saturating); the scales form a [ceil(N/128), ceil(K/128)] grid, the
/// <c>weight_scale_inv</c> of DeepSeek-V3 checkpoints (dequant = q * scale). Partial edge blocks
/// are allowed and count their missing values as zero. NaN is ignored by amax and stays NaN;
/// infinities are ignored by amax and saturate. With <see cref="ScaleFormat.UE8M0"/> the scale
/// is rounded up to a power of two. The CUDA backend dequantizes with the native kernel
/// <c>dk_dequantize_weight_fp8</c>.
/// </summary>
public static class WeightQuantization
{
    /// <summary>Rows and columns per scale block.</summary>
    public const int BlockSize = 128;

    /// <summary>Number of blocks along a dimension of <paramref name="size"/> elements.</summary>
    public static int BlockCount(long size) => checked((int)((size + BlockSize - 1) / BlockSize));

    /// <summary>
    /// Quantizes a row-major [<paramref name="rows"/>, <paramref name="cols"/>] weight into
    /// <paramref name="output"/> and block <paramref name="scales"/> ([ceil(rows/128), ceil(cols/128)]).
    /// A band of rows starting at a multiple of 128 may be quantized on its own (streaming).
    /// </summary>
    public static void Quantize(ReadOnlySpan<float> weight, int rows, int cols, Span<Float8E4M3> output, Span<float> scales, ScaleFormat format = ScaleFormat.Float32)
    {
        CheckSizes(weight.Length, rows, cols, output.Length, scales.Length, nameof(weight));
        var codes = MemoryMarshal.AsBytes(output);
        int rowBlocks = BlockCount(rows), colBlocks = BlockCount(cols);
        for (int rb = 0; rb < rowBlocks; rb++)
            QuantizeBand(weight, rows, cols, rb, codes, scales.Slice(rb * colBlocks, colBlocks), format);
    }

    /// <summary>Quantizes the 128-row band <paramref name="rb"/>; scales receives its colBlocks scales.</summary>
    internal static void QuantizeBand(ReadOnlySpan<float> weight, int rows, int cols, int rb, Span<byte> codes, Span<float> bandScales, ScaleFormat format)
    {
        int r0 = rb * BlockSize, r1 = Math.Min(rows, r0 + BlockSize);
        int colBlocks = BlockCount(cols);
        for (int cb = 0; cb < colBlocks; cb++)
        {
            int c0 = cb * BlockSize, width = Math.Min(BlockSize, cols - c0);
            float amax = 0;
            for (int r = r0; r < r1; r++)
                amax = MathF.Max(amax, Fp8BlockKernels.AbsMaxFinite(weight.Slice(r * cols + c0, width)));
            float scale = ActivationQuantization.ScaleFor(amax, format);
            bandScales[cb] = scale;
            for (int r = r0; r < r1; r++)
                Fp8BlockKernels.QuantizeScaled(weight.Slice(r * cols + c0, width), scale, codes.Slice(r * cols + c0, width));
        }
    }

    /// <summary>Dequantizes a block-scaled FP8 weight: output = q * scaleInv[row/128, col/128].</summary>
    public static void Dequantize(ReadOnlySpan<Float8E4M3> weight, ReadOnlySpan<float> scaleInv, int rows, int cols, Span<float> output)
    {
        CheckSizes(output.Length, rows, cols, weight.Length, scaleInv.Length, nameof(output));
        Guard.AllFinitePositive(scaleInv, nameof(scaleInv));
        var codes = MemoryMarshal.AsBytes(weight);
        int colBlocks = BlockCount(cols);
        for (int r = 0; r < rows; r++)
            DequantizeRow(codes.Slice(r * cols, cols), scaleInv.Slice(r / BlockSize * colBlocks, colBlocks), output.Slice(r * cols, cols));
    }

    /// <summary>Dequantizes a block-scaled FP8 weight to bfloat16 (rounded to nearest even).</summary>
    public static void Dequantize(ReadOnlySpan<Float8E4M3> weight, ReadOnlySpan<float> scaleInv, int rows, int cols, Span<BFloat16> output)
    {
        CheckSizes(output.Length, rows, cols, weight.Length, scaleInv.Length, nameof(output));
        Guard.AllFinitePositive(scaleInv, nameof(scaleInv));
        var codes = MemoryMarshal.AsBytes(weight);
        int colBlocks = BlockCount(cols);
        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            DequantizeRow(codes.Slice(r * cols, cols), scaleInv.Slice(r / BlockSize * colBlocks, colBlocks), row);
            BFloat16.FromSingle(row, output.Slice(r * cols, cols));
        }
    }

    /// <summary>One row: each 128-wide segment times its block scale.</summary>
    internal static void DequantizeRow(ReadOnlySpan<byte> codes, ReadOnlySpan<float> rowScales, Span<float> output)
    {
        for (int c0 = 0, cb = 0; c0 < codes.Length; c0 += BlockSize, cb++)
        {
            int width = Math.Min(BlockSize, codes.Length - c0);
            Fp8BlockKernels.DequantizeScaled(codes.Slice(c0, width), rowScales[cb], output.Slice(c0, width));
        }
    }

    private static void CheckSizes(int valueLength, int rows, int cols, int otherLength, int scaleLength, string valueName)
    {
        Guard.Positive(rows, nameof(rows));
        Guard.Positive(cols, nameof(cols));
        Guard.Length(valueLength, (long)rows * cols, valueName);
        Guard.Length(otherLength, (long)rows * cols, valueName == "weight" ? "output" : "weight");
        Guard.Length(scaleLength, (long)BlockCount(rows) * BlockCount(cols), valueName == "weight" ? "scales" : "scaleInv");
    }

    /// <summary>
    /// Quantizes a [N, K] tensor (Float32 or BFloat16) on <paramref name="backend"/> into a
    /// [N, K] Float8E4M3 tensor and a [ceil(N/128), ceil(K/128)] scale tensor (Float32, or UE8M0 bytes).
    /// </summary>
    public static void Quantize(Backend backend, TensorView input, TensorView output, TensorView scales)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(input, 2, nameof(input));
        Guard.DType(input, DType.Float32, DType.BFloat16, nameof(input));
        long n = input.Dim(0), k = input.Dim(1);
        Guard.Positive(n, "N");
        Guard.Positive(k, "K");
        Guard.DType(output, DType.Float8E4M3, nameof(output));
        Guard.Shape(output, nameof(output), n, k);
        Guard.DType(scales, DType.Float32, DType.UE8M0, nameof(scales));
        Guard.Shape(scales, nameof(scales), BlockCount(n), BlockCount(k));
        CheckPlacement(backend, (input, nameof(input)), (output, nameof(output)), (scales, nameof(scales)));
        var impl = Guard.Implementation<IWeightQuantizationBackend>(backend, "FP8 weight quantization");
        impl.QuantizeWeights(new WeightQuantizationArgs(input, output, scales, checked((int)n), checked((int)k)));
    }

    /// <summary>
    /// Dequantizes a [N, K] Float8E4M3 weight with its [ceil(N/128), ceil(K/128)] scales
    /// (Float32 or UE8M0) into a [N, K] Float32 or BFloat16 tensor. Scales must be finite and
    /// positive (checked on host backends; UE8M0 0xFF is NaN).
    /// </summary>
    public static void Dequantize(Backend backend, TensorView weight, TensorView scaleInv, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(weight, 2, nameof(weight));
        Guard.DType(weight, DType.Float8E4M3, nameof(weight));
        long n = weight.Dim(0), k = weight.Dim(1);
        Guard.Positive(n, "N");
        Guard.Positive(k, "K");
        Guard.DType(scaleInv, DType.Float32, DType.UE8M0, nameof(scaleInv));
        Guard.Shape(scaleInv, nameof(scaleInv), BlockCount(n), BlockCount(k));
        Guard.DType(output, DType.Float32, DType.BFloat16, nameof(output));
        Guard.Shape(output, nameof(output), n, k);
        CheckPlacement(backend, (weight, nameof(weight)), (scaleInv, nameof(scaleInv)), (output, nameof(output)));
        if (scaleInv.Location == MemoryLocation.Host) ScaleReader.Validate(scaleInv, nameof(scaleInv));
        var impl = Guard.Implementation<IWeightQuantizationBackend>(backend, "FP8 weight dequantization");
        impl.DequantizeWeights(new WeightDequantizationArgs(weight, scaleInv, output, checked((int)n), checked((int)k)));
    }

    internal static void CheckPlacement(Backend backend, params ReadOnlySpan<(TensorView View, string Name)> views)
    {
        foreach (var (view, name) in views)
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
    }
}

/// <summary>Validated arguments of <see cref="WeightQuantization.Quantize(Backend, TensorView, TensorView, TensorView)"/>.</summary>
internal readonly record struct WeightQuantizationArgs(TensorView Input, TensorView Output, TensorView Scales, int N, int K);

/// <summary>Validated arguments of <see cref="WeightQuantization.Dequantize(Backend, TensorView, TensorView, TensorView)"/>.</summary>
internal readonly record struct WeightDequantizationArgs(TensorView Weight, TensorView ScaleInv, TensorView Output, int N, int K);

/// <summary>A backend's implementation of weight (de)quantization.</summary>
internal interface IWeightQuantizationBackend
{
    void QuantizeWeights(in WeightQuantizationArgs args);

    void DequantizeWeights(in WeightDequantizationArgs args);
}
