using System.Runtime.InteropServices;
using DeepKernels.Formats;
using DeepKernels.Model.Safetensors;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `deepkernels quantize --input A.safetensors --output B.safetensors [--scale-format f32|ue8m0]`:
/// converts every 2-D BF16/F16/F32 tensor named `*.weight` (except embeddings, norms, lm_head and
/// the MoE router `mlp.gate.weight`) to E4M3 with 128x128 block scales stored as
/// `&lt;name&gt;_scale_inv` [ceil(out/128), ceil(in/128)] (F32, or F8_E8M0 with ue8m0), as
/// DeepSeek-V3 checkpoints do; every other tensor is copied byte for byte. Tensors are streamed
/// one 128-row band at a time into a temporary file in the output folder, which is renamed
/// over the output only when everything succeeded.
/// </summary>
internal sealed class QuantizeCommand : ICliCommand
{
    public string Name => "quantize";

    public string Summary => "Quantize a safetensors checkpoint's linear weights to FP8 E4M3 with 128x128 block scales.";

    /// <summary>Whether a tensor is converted: a 2-D float `*.weight` that is not an embedding, norm, lm_head or router gate.</summary>
    internal static bool IsQuantizable(string name, DType dtype, IReadOnlyList<long> shape) =>
        shape.Count == 2 && dtype is DType.BFloat16 or DType.Float16 or DType.Float32
        && name.EndsWith(".weight", StringComparison.Ordinal)
        && !name.Contains("embed_tokens", StringComparison.Ordinal)
        && !name.Contains("norm", StringComparison.OrdinalIgnoreCase)
        && !name.Contains("lm_head", StringComparison.Ordinal)
        && !name.EndsWith("mlp.gate.weight", StringComparison.Ordinal)
        && shape[0] > 0 && shape[1] > 0;

    public int Run(CliArguments args, TextWriter output)
    {
        string input = args.String("input") ?? throw new CliUsageException("--input <file.safetensors> is required.");
        string outputPath = args.String("output") ?? throw new CliUsageException("--output <file.safetensors> is required.");
        string scaleFormat = args.String("scale-format", "f32");
        args.EnsureAllUsed();
        var format = scaleFormat switch
        {
            "f32" => ScaleFormat.Float32,
            "ue8m0" => ScaleFormat.UE8M0,
            _ => throw new CliUsageException($"--scale-format expects f32 or ue8m0, got '{scaleFormat}'."),
        };
        string inputFull = Path.GetFullPath(input), outputFull = Path.GetFullPath(outputPath);
        if (string.Equals(inputFull, outputFull, StringComparison.Ordinal))
            throw new CliUsageException("--output must differ from --input.");
        string? folder = Path.GetDirectoryName(outputFull);
        if (folder is null || !Directory.Exists(folder)) throw new CliUsageException($"Output folder '{folder}' does not exist.");

        using var source = SafetensorsFile.Open(inputFull);
        var (specs, quantized) = Plan(source, format);
        string temp = Path.Combine(folder, $".{Path.GetFileName(outputFull)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var writer = SafetensorsWriter.Create(temp, specs, source.Metadata))
            {
                // Read in data order so the input is streamed front to back.
                foreach (var tensor in source.Tensors.OrderBy(t => t.DataBegin))
                {
                    if (quantized.Contains(tensor.Name)) WriteQuantized(writer, tensor, format);
                    else writer.WriteTensor(tensor.Name, sink => Copy(tensor, sink));
                }
                writer.Complete();
            }
            File.Move(temp, outputFull, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        output.WriteLine($"quantized {quantized.Count} of {source.Tensors.Count} tensors to F8_E4M3 with {(format == ScaleFormat.UE8M0 ? "F8_E8M0" : "F32")} 128x128 scale_inv; wrote {outputFull}");
        return 0;
    }

    private static (List<SafetensorsTensorSpec>, HashSet<string>) Plan(SafetensorsFile source, ScaleFormat format)
    {
        var specs = new List<SafetensorsTensorSpec>();
        var quantized = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in source.Tensors.OrderBy(t => t.DataBegin))
        {
            if (!IsQuantizable(t.Name, t.DType, t.Shape))
            {
                specs.Add(new SafetensorsTensorSpec(t.Name, t.DType, t.Shape));
                continue;
            }
            string scaleName = t.Name + "_scale_inv";
            if (source.Contains(scaleName))
                throw new InvalidDataException($"{source.Path}: cannot quantize '{t.Name}': a tensor named '{scaleName}' already exists.");
            quantized.Add(t.Name);
            specs.Add(new SafetensorsTensorSpec(t.Name, DType.Float8E4M3, t.Shape));
            specs.Add(new SafetensorsTensorSpec(scaleName, format == ScaleFormat.UE8M0 ? DType.UE8M0 : DType.Float32,
                [WeightQuantization.BlockCount(t.Shape[0]), WeightQuantization.BlockCount(t.Shape[1])]));
        }
        return (specs, quantized);
    }

    private static unsafe void Copy(SafetensorsTensor tensor, ISafetensorsSink sink)
    {
        const int Piece = 1 << 24;
        byte* p = (byte*)tensor.Address;
        for (long done = 0; done < tensor.ByteLength; done += Piece)
            sink.Write(new ReadOnlySpan<byte>(p + done, (int)Math.Min(Piece, tensor.ByteLength - done)));
    }

    private static unsafe void WriteQuantized(SafetensorsWriter writer, SafetensorsTensor tensor, ScaleFormat format)
    {
        int rows = checked((int)tensor.Shape[0]), cols = checked((int)tensor.Shape[1]);
        int bandRows = WeightQuantization.BlockSize;
        if ((long)bandRows * cols > int.MaxValue) throw new NotSupportedException($"Tensor '{tensor.Name}' has rows too long ({cols}) to quantize.");
        int colBlocks = WeightQuantization.BlockCount(cols), rowBlocks = WeightQuantization.BlockCount(rows);
        var scales = new float[rowBlocks * colBlocks];
        var band = new float[bandRows * cols];
        var codes = new byte[bandRows * cols];
        int elementSize = tensor.DType.SizeInBytes();
        byte* data = (byte*)tensor.Address;
        writer.WriteTensor(tensor.Name, sink =>
        {
            for (int rb = 0; rb < rowBlocks; rb++)
            {
                int r0 = rb * bandRows, count = Math.Min(bandRows, rows - r0) * cols;
                byte* src = data + (long)r0 * cols * elementSize;
                var values = band.AsSpan(0, count);
                switch (tensor.DType)
                {
                    case DType.Float32: new ReadOnlySpan<float>(src, count).CopyTo(values); break;
                    case DType.BFloat16: BFloat16.ToSingle(new ReadOnlySpan<ushort>(src, count), values); break;
                    default: System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, count), values); break;
                }
                WeightQuantization.QuantizeBand(values, count / cols, cols, 0, codes.AsSpan(0, count), scales.AsSpan(rb * colBlocks, colBlocks), format);
                sink.Write(codes.AsSpan(0, count));
            }
        });
        string scaleName = tensor.Name + "_scale_inv";
        if (format == ScaleFormat.UE8M0) writer.WriteTensor(scaleName, scales.Select(UE8M0.FromSingleRoundUp).ToArray());
        else writer.WriteTensor(scaleName, MemoryMarshal.AsBytes(scales.AsSpan()));
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
