using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IWeightQuantizationBackend
{
    /// <summary>
    /// Block quantization: <c>dk_fp8_quantize_weight_blocks(const void* w, int w_bf16, unsigned char* q,
    /// void* scales, int scales_ue8m0, int n, int k)</c> (native/kernels/fp8_gemm_weights.cu).
    /// </summary>
    internal const string QuantizeWeightsKernel = "dk_fp8_quantize_weight_blocks";

    /// <summary>
    /// Block dequantization: <c>dk_dequantize_weight_fp8(const unsigned char* w, const float* scale_inv,
    /// void* out, int out_is_bf16, int n, int k)</c> (native/kernels/dequantize_fp8.cu).
    /// </summary>
    internal const string DequantizeWeightsKernel = "dk_dequantize_weight_fp8";

    /// <summary>Rows per dequantization launch: under grid.y's 65535 and a whole number of 128-row scale blocks.</summary>
    internal const int DequantizeRowsPerLaunch = 511 * WeightQuantization.BlockSize;

    void IWeightQuantizationBackend.QuantizeWeights(in WeightQuantizationArgs args)
    {
        int rowBlocks = WeightQuantization.BlockCount(args.N), colBlocks = WeightQuantization.BlockCount(args.K);
        if (rowBlocks > 65535)
            throw new ArgumentException($"The CUDA weight quantization handles at most {65535 * WeightQuantization.BlockSize} rows (grid.y), got {args.N}.", nameof(args));
        LaunchKernel(QuantizeWeightsKernel, new Dim3((uint)colBlocks, (uint)rowBlocks), new Dim3(256), 0,
            KernelArg.Pointer(args.Input), args.Input.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(args.Output), KernelArg.Pointer(args.Scales), args.Scales.DType == DType.UE8M0 ? 1 : 0,
            args.N, args.K);
    }

    void IWeightQuantizationBackend.DequantizeWeights(in WeightDequantizationArgs args)
    {
        int k = args.K, colBlocks = WeightQuantization.BlockCount(k);
        int outSize = args.Output.DType.SizeInBytes();
        // The kernel reads FP32 scales; UE8M0 exponents are widened once on the host.
        TensorBuffer? widened = null;
        try
        {
            nint scaleInv = args.ScaleInv.Data;
            if (args.ScaleInv.DType == DType.UE8M0)
            {
                float[] floats = Download<byte>(args.ScaleInv).Select(UE8M0.ToSingle).ToArray();
                widened = Upload<float>(floats, DType.Float32, floats.Length);
                scaleInv = widened.View.Data;
            }
            for (int row0 = 0; row0 < args.N; row0 += DequantizeRowsPerLaunch)
            {
                int rows = Math.Min(DequantizeRowsPerLaunch, args.N - row0);
                LaunchKernel(DequantizeWeightsKernel, new Dim3((uint)((k + 511) / 512), (uint)rows), new Dim3(128), 0,
                    KernelArg.Pointer(args.Weight.Data + (nint)row0 * k),
                    KernelArg.Pointer(scaleInv + (nint)(row0 / WeightQuantization.BlockSize) * colBlocks * sizeof(float)),
                    KernelArg.Pointer(args.Output.Data + (nint)row0 * k * outSize),
                    args.Output.DType == DType.BFloat16 ? 1 : 0,
                    rows, k);
            }
        }
        finally
        {
            if (widened is not null) ReleaseAfterQueuedWork([widened]);
        }
    }
}
