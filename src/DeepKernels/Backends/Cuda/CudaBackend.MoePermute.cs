using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IMoePermuteBackend
{
    /// <summary>
    /// Gather (optionally with fused FP8 quantization): <c>dk_moe_gather(input, input_bf16,
    /// inverse, tokens, width, top_k, rows, mode, row_scales, scales_ue8m0)</c> (native/kernels/moe_permute.cu).
    /// </summary>
    internal const string MoeGatherKernel = "dk_moe_gather";

    /// <summary>
    /// Weighted combine: <c>dk_moe_combine(expert_out, expert_bf16, inverse, weights, shared,
    /// shared_bf16, has_shared, output, out_bf16, tokens, width, top_k)</c>.
    /// </summary>
    internal const string MoeCombineKernel = "dk_moe_combine";

    // The layouts are index bookkeeping over T*k ids whose result sizes the host needs anyway (rows
    // used, expected_m): they are built on the host from a copy of the ids, with the CPU
    // reference code, and uploaded.
    int IMoePermuteBackend.BuildContiguous(in MoeContiguousArgs a)
    {
        int[] ids = Download<int>(a.ExpertIds);
        MoePermutationCore.CheckExpertIds(ids, a.TopK, a.Experts, "expertIds");
        var offsets = new int[a.Experts + 1];
        var mIndices = new int[a.MIndices.ElementCount];
        var rowTokens = new int[a.RowTokens.ElementCount];
        var inverse = new int[a.Inverse.ElementCount];
        int used = MoePermutationCore.BuildContiguous(ids, a.TopK, a.Experts, a.Alignment, offsets, mIndices, rowTokens, inverse);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(offsets.AsSpan()), a.ExpertOffsets);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(mIndices.AsSpan()), a.MIndices);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(rowTokens.AsSpan()), a.RowTokens);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(inverse.AsSpan()), a.Inverse);
        return used;
    }

    int IMoePermuteBackend.BuildMasked(in MoeMaskedArgs a)
    {
        int[] ids = Download<int>(a.ExpertIds);
        MoePermutationCore.CheckExpertIds(ids, a.TopK, a.Experts, "expertIds");
        var counts = new int[a.Experts];
        MoePermutationCore.Count(ids, counts);
        for (int e = 0; e < a.Experts; e++)
        {
            if (counts[e] > a.MMax)
                throw new ArgumentException($"Expected at most mMax = {a.MMax} rows per expert in the masked layout, but expert {e} gets {counts[e]}.", nameof(a));
        }
        var maskedM = new int[a.Experts];
        var rowTokens = new int[a.RowTokens.ElementCount];
        var inverse = new int[a.Inverse.ElementCount];
        int expected = MoePermutationCore.BuildMasked(ids, a.TopK, a.Experts, a.MMax, maskedM, rowTokens, inverse);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(maskedM.AsSpan()), a.MaskedM);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(rowTokens.AsSpan()), a.RowTokens);
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(inverse.AsSpan()), a.Inverse);
        return expected;
    }

    void IMoePermuteBackend.Gather(in MoeGatherArgs a)
    {
        if (a.Tokens == 0) return;
        CheckDeviceInverse(a.Inverse, a.TopK, a.Rows.ElementCount / a.Width);
        bool quantize = a.Rows.DType == DType.Float8E4M3;
        var scales = a.RowScales;
        int groups = ActivationQuantization.GroupCount(a.Width);
        if (groups > 65535)
            throw new ArgumentException($"The CUDA gather handles rows of at most {65535 * 128} values (grid.y), got width {a.Width}.", nameof(a));
        LaunchKernel(MoeGatherKernel, new Dim3((uint)a.Tokens, (uint)groups), new Dim3(128), 0,
            KernelArg.Pointer(a.Input),
            a.Input.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(a.Inverse),
            a.Tokens, a.Width, a.TopK,
            KernelArg.Pointer(a.Rows),
            quantize ? 1 : 0,
            KernelArg.Pointer(quantize && scales is TensorView s ? s.Data : 0),
            quantize && scales is TensorView u && u.DType == DType.UE8M0 ? 1 : 0);
    }

    void IMoePermuteBackend.Combine(in MoeCombineArgs a)
    {
        if (a.Tokens == 0) return;
        CheckDeviceInverse(a.Inverse, a.TopK, a.ExpertOut.ElementCount / a.Width);
        uint columnBlocks = (uint)((a.Width + 255) / 256);
        if (columnBlocks > 65535)
            throw new ArgumentException($"The CUDA combine handles rows of at most {65535 * 256} values (grid.y), got width {a.Width}.", nameof(a));
        LaunchKernel(MoeCombineKernel, new Dim3((uint)a.Tokens, columnBlocks), new Dim3(256), 0,
            KernelArg.Pointer(a.ExpertOut),
            a.ExpertOut.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(a.Inverse),
            KernelArg.Pointer(a.Weights),
            KernelArg.Pointer(a.Shared is TensorView s ? s.Data : 0),
            a.Shared is TensorView sb && sb.DType == DType.BFloat16 ? 1 : 0,
            a.Shared is null ? 0 : 1,
            KernelArg.Pointer(a.Output),
            a.Output.DType == DType.BFloat16 ? 1 : 0,
            a.Tokens, a.Width, a.TopK);
    }

    // The op checks host maps; a device map is read back once so a bad row index is an
    // ArgumentException here instead of an out-of-bounds access in the kernel.
    private void CheckDeviceInverse(TensorView inverse, int topK, long rows) =>
        MoePermutationCore.CheckInverse(Download<int>(inverse), topK, rows, "inverse");
}
