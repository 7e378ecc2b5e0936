using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IActivationQuantizationBackend
{
    /// <summary>The kernel: <c>dk_quantize_act_fp8(const void* x, int x_is_bf16, unsigned char* q, void* scales, int scales_ue8m0, int m, int k)</c>.</summary>
    internal const string QuantizeActivationsKernel = "dk_quantize_act_fp8";

    /// <summary>Rows per launch: grid.y is limited to 65535.</summary>
    internal const int MaxRowsPerLaunch = 65535;

    void IActivationQuantizationBackend.QuantizeActivations(in ActivationQuantizationArgs args)
    {
        // One CTA of 128 threads per 1x128 group: grid = (groups, rows), one thread per element.
        int k = args.K, groups = ActivationQuantization.GroupCount(k);
        int inputSize = args.Input.DType.SizeInBytes(), scaleSize = args.Scales.DType.SizeInBytes();
        int isBf16 = args.Input.DType == DType.BFloat16 ? 1 : 0;
        int ue8m0 = args.Scales.DType == DType.UE8M0 ? 1 : 0;
        for (int row0 = 0; row0 < args.M; row0 += MaxRowsPerLaunch)
        {
            int rows = Math.Min(MaxRowsPerLaunch, args.M - row0);
            LaunchKernel(QuantizeActivationsKernel, new Dim3((uint)groups, (uint)rows), new Dim3((uint)ActivationQuantization.GroupSize), 0,
                KernelArg.Pointer(args.Input.Data + (nint)row0 * k * inputSize),
                isBf16,
                KernelArg.Pointer(args.Output.Data + (nint)row0 * k),
                KernelArg.Pointer(args.Scales.Data + (nint)row0 * groups * scaleSize),
                ue8m0,
                rows,
                k);
        }
    }
}
