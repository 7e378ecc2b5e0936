using System.Runtime.InteropServices;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IWeightQuantizationBackend, IActivationDequantizationBackend
{
    void IWeightQuantizationBackend.QuantizeWeights(in WeightQuantizationArgs args)
    {
        int n = args.N, k = args.K, colBlocks = WeightQuantization.BlockCount(k);
        var a = args;
        bool ue8m0 = args.Scales.DType == DType.UE8M0;
        var format = ue8m0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32;
        // One 128-row band per work item: its block scales depend on that band only. FP32 input is
        // read in place; BF16 bands are widened into a pooled buffer (a fresh 128 x K array per band
        // cost ~60-120 MB of garbage per call at DeepSeek-V3 shapes).
        Parallel.For(0, WeightQuantization.BlockCount(n), ParallelOptions, rb =>
        {
            int r0 = rb * WeightQuantization.BlockSize, rows = Math.Min(WeightQuantization.BlockSize, n - r0);
            float[]? rented = null;
            try
            {
                ReadOnlySpan<float> band;
                if (a.Input.DType == DType.Float32) band = a.Input.AsSpan<float>().Slice(r0 * k, rows * k);
                else
                {
                    rented = System.Buffers.ArrayPool<float>.Shared.Rent(rows * k);
                    BFloat16.ToSingle(a.Input.AsSpan<ushort>().Slice(r0 * k, rows * k), rented.AsSpan(0, rows * k));
                    band = rented.AsSpan(0, rows * k);
                }
                Span<float> scales = colBlocks <= 256 ? stackalloc float[colBlocks] : new float[colBlocks];
                WeightQuantization.QuantizeBand(band, rows, k, 0, a.Output.AsSpan<byte>().Slice(r0 * k, rows * k), scales, format);
                for (int cb = 0; cb < colBlocks; cb++)
                {
                    if (ue8m0) a.Scales.AsSpan<byte>()[rb * colBlocks + cb] = UE8M0.FromSingleRoundUp(scales[cb]);
                    else a.Scales.AsSpan<float>()[rb * colBlocks + cb] = scales[cb];
                }
            }
            finally
            {
                if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
            }
        });
    }

    void IWeightQuantizationBackend.DequantizeWeights(in WeightDequantizationArgs args)
    {
        int k = args.K, colBlocks = WeightQuantization.BlockCount(k);
        float[] scales = ScaleReader.ToSingles(args.ScaleInv, "scaleInv");
        var a = args;
        Parallel.For(0, args.N, ParallelOptions, () => new float[k], (r, _, row) =>
        {
            var codes = a.Weight.AsSpan<byte>().Slice(r * k, k);
            var rowScales = scales.AsSpan(r / WeightQuantization.BlockSize * colBlocks, colBlocks);
            if (a.Output.DType == DType.Float32) WeightQuantization.DequantizeRow(codes, rowScales, a.Output.AsSpan<float>().Slice(r * k, k));
            else
            {
                WeightQuantization.DequantizeRow(codes, rowScales, row);
                BFloat16.FromSingle(row, a.Output.AsSpan<ushort>().Slice(r * k, k));
            }
            return row;
        }, _ => { });
    }

    void IActivationDequantizationBackend.DequantizeActivations(in ActivationDequantizationArgs args)
    {
        int k = args.K, groups = ActivationQuantization.GroupCount(k);
        float[] scales = ScaleReader.ToSingles(args.Scales, "scales");
        var a = args;
        Parallel.For(0, args.M, ParallelOptions, () => new float[k], (r, _, row) =>
        {
            var codes = a.Input.AsSpan<byte>().Slice(r * k, k);
            var rowScales = scales.AsSpan(r * groups, groups);
            if (a.Output.DType == DType.Float32) WeightQuantization.DequantizeRow(codes, rowScales, a.Output.AsSpan<float>().Slice(r * k, k));
            else
            {
                WeightQuantization.DequantizeRow(codes, rowScales, row);
                BFloat16.FromSingle(row, a.Output.AsSpan<ushort>().Slice(r * k, k));
            }
            return row;
        }, _ => { });
    }
}
