using System.Buffers;
using System.Numerics.Tensors;
using DeepKernels.Formats;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IMoeLayerBackend
{
    void IMoeLayerBackend.MoeForward(in MoeLayerArgs args)
    {
        var a = args;
        var ws = a.Workspace;
        var w = a.Weights;
        var c = w.Config;
        int tokens = a.Tokens, k = c.TopK, h = c.Hidden, inter = c.Intermediate, shared = c.SharedIntermediate;

        // 1. Quantize each token once (1x128 groups); routed rows and the shared expert both use it.
        QuantizeRows(a.X, tokens, h, ws.TokenQ, ws.TokenScales);

        // 2. Contiguous layout and the FP8 gather (a byte copy of the quantized token rows).
        int capacity = MoePermutation.ContiguousCapacity(tokens, k, c.NumExperts, ws.Alignment);
        var inverse = ws.Inverse.SliceRows(0, tokens);
        int rows = MoePermutationCore.BuildContiguous(a.ExpertIds.AsSpan<int>(), k, c.NumExperts, ws.Alignment,
            ws.ExpertOffsets.AsSpan<int>(), ws.MIndices.AsSpan<int>()[..capacity], ws.RowTokens.AsSpan<int>()[..capacity], inverse.AsSpan<int>());
        GatherQuantizedRows(ws, tokens, k, h);

        if (rows > 0)
        {
            // 3. gate_up, SiLU(gate) * up re-quantized, down: routed experts over the used rows.
            var gateUp = new Fp8GroupedProblem(ws.RowQ.Data, ws.RowScales.Data, ws.MIndices.Data, 0, rows, 0, c.NumExperts, 2 * inter, h,
                w.GateUp.Data, w.GateUpScales.Data, ws.GateUp.Data, false);
            GroupedGemmCpu.Run(gateUp, ParallelOptions);
            SiluMulQuantize(ws.GateUp, ws.MIndices, rows, inter, ws.HiddenQ, ws.HiddenScales);
            var down = new Fp8GroupedProblem(ws.HiddenQ.Data, ws.HiddenScales.Data, ws.MIndices.Data, 0, rows, 0, c.NumExperts, h, inter,
                w.Down.Data, w.DownScales.Data, ws.Down.Data, false);
            GroupedGemmCpu.Run(down, ParallelOptions);
        }

        // 4. Shared expert: a dense FP8 MLP, run as one group of the masked layout with all tokens.
        TensorView? sharedOut = null;
        if (shared > 0)
        {
            ws.SharedMaskedM.AsSpan<int>()[0] = tokens;
            var gateUp = new Fp8GroupedProblem(ws.TokenQ.Data, ws.TokenScales.Data, 0, ws.SharedMaskedM.Data, tokens, tokens, 1, 2 * shared, h,
                w.SharedGateUp!.Value.Data, w.SharedGateUpScales!.Value.Data, ws.SharedGateUp.Data, false);
            GroupedGemmCpu.Run(gateUp, ParallelOptions);
            SiluMulQuantize(ws.SharedGateUp, null, tokens, shared, ws.SharedHiddenQ, ws.SharedHiddenScales);
            var down = new Fp8GroupedProblem(ws.SharedHiddenQ.Data, ws.SharedHiddenScales.Data, 0, ws.SharedMaskedM.Data, tokens, tokens, 1, h, shared,
                w.SharedDown!.Value.Data, w.SharedDownScales!.Value.Data, ws.SharedOut.Data, false);
            GroupedGemmCpu.Run(down, ParallelOptions);
            sharedOut = ws.SharedOut.SliceRows(0, tokens);
        }

        // 5. Weighted combine (+ shared) into the output.
        ((IMoePermuteBackend)this).Combine(new MoeCombineArgs(ws.Down, h, inverse, a.RoutingWeights, k, sharedOut, a.Output, tokens));
    }

    /// <summary>Per-token FP8 quantization of a Float32/BFloat16 [T, width] tensor, allocation free.</summary>
    private void QuantizeRows(TensorView x, int tokens, int width, TensorView q, TensorView scales)
    {
        int groups = ActivationQuantization.GroupCount(width);
        ForTokens(tokens, width, (start, end) =>
        {
            float[]? rented = x.DType == DType.Float32 ? null : ArrayPool<float>.Shared.Rent(width);
            try
            {
                for (int t = start; t < end; t++)
                {
                    ReadOnlySpan<float> row;
                    if (rented is null) row = x.AsSpan<float>().Slice(t * width, width);
                    else
                    {
                        ReadRow(x, t, rented.AsSpan(0, width));
                        row = rented.AsSpan(0, width);
                    }
                    QuantizeRow(row, q.AsSpan<Float8E4M3>().Slice(t * width, width), scales.AsSpan<float>().Slice(t * groups, groups));
                }
            }
            finally
            {
                if (rented is not null) ArrayPool<float>.Shared.Return(rented);
            }
        });
    }

    private static void QuantizeRow(ReadOnlySpan<float> row, Span<Float8E4M3> q, Span<float> scales)
    {
        for (int g = 0; g < scales.Length; g++)
        {
            int start = g * ActivationQuantization.GroupSize, length = Math.Min(ActivationQuantization.GroupSize, row.Length - start);
            scales[g] = ActivationQuantization.QuantizeGroup(row.Slice(start, length), q.Slice(start, length), ScaleFormat.Float32);
        }
    }

    /// <summary>Copies each token's FP8 codes and scales to its routed rows.</summary>
    private void GatherQuantizedRows(MoeWorkspace ws, int tokens, int k, int h)
    {
        int groups = ActivationQuantization.GroupCount(h);
        ForTokens(tokens, (long)h * k, (start, end) =>
        {
            var inverse = ws.Inverse.AsSpan<int>();
            for (int t = start; t < end; t++)
            {
                var rowsOfToken = inverse.Slice(t * k, k);
                MoePermutationCore.GatherToken<byte>(ws.TokenQ.AsSpan<byte>().Slice(t * h, h), rowsOfToken, ws.RowQ.AsSpan<byte>(), h);
                MoePermutationCore.GatherToken<float>(ws.TokenScales.AsSpan<float>().Slice(t * groups, groups), rowsOfToken, ws.RowScales.AsSpan<float>(), groups);
            }
        });
    }

    /// <summary>
    /// sigmoid(x) evaluated in float64 and rounded once to float32: unlike a vectorized float32
    /// approximation, this has one portable result, which the CUDA kernel
    /// (native/kernels/moe_activation.cu) reproduces.
    /// </summary>
    private static void SigmoidRoundedOnce(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = (float)(1.0 / (1.0 + Math.Exp(-(double)x[i])));
    }

    /// <summary>
    /// h = SiLU(gate) * up for rows of a [R, 2I] FP32 tensor (gate first), computed in place in
    /// the gate half, then quantized per 1x128 group. Rows whose m_index is -1 are skipped. Also the reference
    /// of the CUDA kernel dk_silu_mul_quant_fp8 (bit-exact tests).
    /// </summary>
    internal void SiluMulQuantize(TensorView gateUp, TensorView? mIndices, int rows, int inter, TensorView q, TensorView scales)
    {
        int groups = ActivationQuantization.GroupCount(inter);
        ForTokens(rows, 4L * inter, (start, end) =>
        {
            var all = gateUp.AsSpan<float>();
            for (int r = start; r < end; r++)
            {
                if (mIndices is TensorView m && m.AsSpan<int>()[r] < 0) continue;
                var gate = all.Slice(r * 2 * inter, inter);
                var up = all.Slice(r * 2 * inter + inter, inter);
                TensorPrimitives.Multiply(up, gate, up);      // up * g
                SigmoidRoundedOnce(gate);                     // sigmoid(g)
                TensorPrimitives.Multiply(gate, up, gate);    // g * sigmoid(g) * up
                QuantizeRow(gate, q.AsSpan<Float8E4M3>().Slice(r * inter, inter), scales.AsSpan<float>().Slice(r * groups, groups));
            }
        });
    }
}
