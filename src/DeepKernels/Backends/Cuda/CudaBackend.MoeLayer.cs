using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IMoeLayerBackend
{
    /// <summary>
    /// SiLU(gate) * up re-quantized to FP8: <c>dk_silu_mul_quant_fp8(gate_up, gu_bf16, m_indices,
    /// q, scales, rows, inter)</c> (native/kernels/moe_activation.cu).
    /// </summary>
    internal const string SiluMulQuantKernel = "dk_silu_mul_quant_fp8";

    // The same steps as the CPU backend, each one a kernel on workspace buffers of this backend.
    // Routing stays on the device too: the contiguous layout is built by kernels from the device
    // expert ids, and the GEMM / SiLU launches cover the layout's row bound (rows past the used
    // ones are padding, m_index -1, skipped per tile), so a call makes no device-to-host copy and
    // no stream synchronization (CUDA-graph friendly). Bad expert ids are skipped and recorded in
    // the device error word (ThrowIfDeviceRoutingError), or thrown at once with ValidateDeviceRouting.
    void IMoeLayerBackend.MoeForward(in MoeLayerArgs args)
    {
        var a = args;
        var ws = a.Workspace;
        var w = a.Weights;
        var c = w.Config;
        int tokens = a.Tokens, k = c.TopK, h = c.Hidden, inter = c.Intermediate, shared = c.SharedIntermediate;
        var permute = (IMoePermuteBackend)this;
        var gemm = (IGroupedGemmBackend)this;

        // 1. Contiguous layout (segments aligned to the workspace's alignment, -1 on padding rows);
        //    the same launches set the shared expert's masked_m = T on the device.
        int capacity = MoePermutation.ContiguousCapacity(tokens, k, c.NumExperts, ws.Alignment);
        var inverse = ws.Inverse.SliceRows(0, tokens);
        var mIndices = ws.MIndices.SliceRows(0, capacity);
        int rows = BuildContiguousOnDevice(new MoeContiguousArgs(a.ExpertIds, tokens, k, c.NumExperts, ws.Alignment,
            ws.ExpertOffsets, mIndices, ws.RowTokens.SliceRows(0, capacity), inverse), shared > 0 ? ws.SharedMaskedM : null, tokens, ws.LayoutScratch);

        if (rows > 0)
        {
            // 2. Gather with the FP8 quantization fused in (bit-identical to quantizing each token
            //    once); the same pass writes the token-major codes the shared expert reads.
            LaunchGather(new MoeGatherArgs(a.X, tokens, h, inverse, k, ws.RowQ.SliceRows(0, capacity), ws.RowScales.SliceRows(0, capacity)),
                shared > 0 ? ws.TokenQ.SliceRows(0, tokens) : null, shared > 0 ? ws.TokenScales.SliceRows(0, tokens) : null);

            // 3. gate_up, SiLU(gate) * up re-quantized, down over the row bound; padding rows are skipped.
            var usedIndices = ws.MIndices.SliceRows(0, rows);
            var gateUp = ws.GateUp.SliceRows(0, rows);
            gemm.GroupedGemm(new GroupedGemmArgs(ws.RowQ.SliceRows(0, rows), ws.RowScales.SliceRows(0, rows), usedIndices, null, rows, 0, c.NumExperts,
                2 * inter, h, w.GateUp, w.GateUpScales, gateUp, 0));
            LaunchSiluMulQuant(gateUp, usedIndices, rows, inter, ws.HiddenQ, ws.HiddenScales);
            gemm.GroupedGemm(new GroupedGemmArgs(ws.HiddenQ.SliceRows(0, rows), ws.HiddenScales.SliceRows(0, rows), usedIndices, null, rows, 0, c.NumExperts,
                h, inter, w.Down, w.DownScales, ws.Down.SliceRows(0, rows), 0));
        }

        // 4. Shared expert: a dense FP8 MLP over all tokens, one group of the masked layout.
        TensorView? sharedOut = null;
        if (shared > 0)
        {
            var tokenQ = ws.TokenQ.SliceRows(0, tokens);
            var tokenScales = ws.TokenScales.SliceRows(0, tokens);
            if (rows == 0) ((IActivationQuantizationBackend)this).QuantizeActivations(new ActivationQuantizationArgs(a.X, tokenQ, tokenScales, tokens, h));
            var sharedGateUp = ws.SharedGateUp.SliceRows(0, tokens);
            gemm.GroupedGemm(new GroupedGemmArgs(Lift3(tokenQ), Lift3(tokenScales), null, ws.SharedMaskedM, tokens, tokens, 1, 2 * shared, h,
                MoeLayerWeights.Lift(w.SharedGateUp!.Value), MoeLayerWeights.Lift(w.SharedGateUpScales!.Value), Lift3(sharedGateUp), tokens));
            var hiddenQ = ws.SharedHiddenQ.SliceRows(0, tokens);
            var hiddenScales = ws.SharedHiddenScales.SliceRows(0, tokens);
            LaunchSiluMulQuant(sharedGateUp, null, tokens, shared, hiddenQ, hiddenScales);
            sharedOut = ws.SharedOut.SliceRows(0, tokens);
            gemm.GroupedGemm(new GroupedGemmArgs(Lift3(hiddenQ), Lift3(hiddenScales), null, ws.SharedMaskedM, tokens, tokens, 1, h, shared,
                MoeLayerWeights.Lift(w.SharedDown!.Value), MoeLayerWeights.Lift(w.SharedDownScales!.Value), Lift3(sharedOut.Value), tokens));
        }

        // 5. Weighted combine (+ shared) into the output.
        permute.Combine(new MoeCombineArgs(ws.Down.SliceRows(0, capacity), h, inverse, a.RoutingWeights, k, sharedOut, a.Output, tokens));
    }

    private static TensorView Lift3(TensorView view) => view.Reshape(1, view.Dim(0), view.Dim(1));

    /// <summary>
    /// Launches <see cref="SiluMulQuantKernel"/> on rows of a [R, 2I] FP32/BF16 tensor (gate first)
    /// into FP8 codes [R, I] and FP32 scales [R, ceil(I/128)]; rows whose m_index is -1 are skipped.
    /// </summary>
    internal void LaunchSiluMulQuant(TensorView gateUp, TensorView? mIndices, int rows, int inter, TensorView q, TensorView scales)
    {
        if (rows == 0) return;
        int groups = ActivationQuantization.GroupCount(inter);
        if (groups > 65535)
            throw new ArgumentException($"The CUDA SiLU-quant kernel handles at most {65535 * 128} intermediate values (grid.x), got {inter}.", nameof(inter));
        for (int row0 = 0; row0 < rows; row0 += MaxRowsPerLaunch)
        {
            int n = Math.Min(MaxRowsPerLaunch, rows - row0);
            LaunchKernel(SiluMulQuantKernel, new Dim3((uint)groups, (uint)n), new Dim3((uint)ActivationQuantization.GroupSize), 0,
                KernelArg.Pointer(gateUp.Data + (nint)row0 * 2 * inter * gateUp.DType.SizeInBytes()),
                gateUp.DType == DType.BFloat16 ? 1 : 0,
                KernelArg.Pointer(mIndices is TensorView m ? m.Data + (nint)row0 * sizeof(int) : 0),
                KernelArg.Pointer(q.Data + (nint)row0 * inter),
                KernelArg.Pointer(scales.Data + (nint)row0 * groups * sizeof(float)),
                n,
                inter);
        }
    }
}
