using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Cli.Commands;

/// <summary>`deepkernels run`: the main job.</summary>
internal sealed class RunCommand : ICliCommand
{
    public string Name => "run";

    public string Summary => "Run the main job on the best backend (--backend cpu|cuda|cuda-emu|auto).";

    public int Run(CliArguments args, TextWriter output)
    {
        string backendName = args.String("backend", "auto");
        args.EnsureAllUsed();
        new InfoCommand().Run(new CliArguments([]), output);
        using var backend = BackendFactory.Create(backendName);
        output.WriteLine();
        output.WriteLine($"FP8 per-token-group quantization demo on backend '{backend.Name}' (4 tokens x 7168):");
        const int m = 4, k = 7168;
        var rng = new Random(7);
        var x = new float[m * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (i % k < 128 ? 100f : 1f);
        using var input = backend.Upload<float>(x, DType.Float32, m, k);
        using var q = backend.Allocate(DType.Float8E4M3, m, k);
        using var s = backend.Allocate(DType.Float32, m, ActivationQuantization.GroupCount(k));
        ActivationQuantization.Quantize(backend, input, q, s);
        var codes = backend.Download<byte>(q);
        var scales = backend.Download<float>(s);
        double err = 0, norm = 0;
        int groups = ActivationQuantization.GroupCount(k);
        for (int i = 0; i < x.Length; i++)
        {
            double d = Float8E4M3.ToSingle(codes[i]) * (double)scales[(i / k) * groups + (i % k) / 128];
            err += (d - x[i]) * (d - x[i]);
            norm += (double)x[i] * x[i];
        }
        output.WriteLine($"  scales[0, 0..3] = {string.Join(", ", scales.Take(4).Select(v => v.ToString("G6", System.Globalization.CultureInfo.InvariantCulture)))}");
        output.WriteLine($"  relative RMS error after dequantization = {Math.Sqrt(err / norm):E3} (E4M3 keeps 3 mantissa bits: ~2^-5)");
        return 0;
    }
}
