using System.Globalization;
using DeepKernels.Diagnostics.Benchmarking;
using ScottPlot;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `deepkernels plot`: a roofline chart of a `deepkernels bench --json` report. Log-log axes:
/// arithmetic intensity (FLOP/byte) against throughput; one roof per precision with a known
/// compute ceiling (min(peak, bandwidth x intensity)), the memory roof alone when only the
/// bandwidth is known, and one labelled point per benchmark case.
/// </summary>
internal sealed class PlotCommand : ICliCommand
{
    public string Name => "plot";

    public string Summary => "Roofline chart of a bench report: --json FILE --output roofline.png [--width N] [--height N] [--title TEXT].";

    public int Run(CliArguments args, TextWriter output)
    {
        string json = args.String("json") ?? throw new CliUsageException("--json FILE (a `deepkernels bench --json` report) is required.");
        string png = args.String("output", "roofline.png");
        int width = args.Int("width", 1200, 300, 8000);
        int height = args.Int("height", 800, 200, 8000);
        string? title = args.String("title");
        args.EnsureAllUsed();
        if (!File.Exists(json)) throw new CliUsageException($"report '{json}' does not exist.");

        var report = BenchReport.FromJson(File.ReadAllText(json));
        if (report.Results.Count == 0)
            throw new InvalidDataException($"Report '{json}' has no results to plot{(report.Reason is null ? "" : $" (backend unavailable: {report.Reason})")}.");
        var plot = Build(report, title);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(png));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(png, width, height);
        output.WriteLine($"Wrote {png} ({report.Results.Count} points, backend {report.Backend}).");
        return 0;
    }

    /// <summary>Builds the chart; data are plotted as log10 values with decade ticks.</summary>
    internal static Plot Build(BenchReport report, string? title)
    {
        bool tera = report.Backend != "cpu";
        double unit = tera ? 1000 : 1; // GFLOP/s per shown unit
        string unitName = tera ? "TFLOP/s" : "GFLOP/s";
        var points = report.Results.Where(r => r.ArithmeticIntensity > 0 && r.Gflops > 0).ToList();
        if (points.Count == 0) throw new InvalidDataException("No result has a positive arithmetic intensity and throughput.");

        // Precisions sharing one ceiling (the CPU computes all in FP32) get one roof: "fp8/bf16/fp32".
        var ceilings = report.Limits.ComputeGflops.Where(kv => kv.Value is > 0)
            .GroupBy(kv => kv.Value!.Value)
            .Select(g => (Name: string.Join("/", g.Select(kv => kv.Key)), Peak: g.Key)).ToList();
        double? bandwidth = report.Limits.MemoryGBps is > 0 ? report.Limits.MemoryGBps : null;

        // X range: every point and every ridge point (peak / bandwidth), with a decade of margin.
        var xs = points.Select(p => p.ArithmeticIntensity).ToList();
        if (bandwidth is not null) xs.AddRange(ceilings.Select(c => c.Peak / bandwidth.Value));
        double xMin = Math.Pow(10, Math.Floor(Math.Log10(xs.Min())) - 1);
        double xMax = Math.Pow(10, Math.Ceiling(Math.Log10(xs.Max())) + 1);

        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int colorIndex = 0;
        const int samples = 200;
        double[] roofX = Enumerable.Range(0, samples).Select(i => Math.Log10(xMin) + (Math.Log10(xMax) - Math.Log10(xMin)) * i / (samples - 1)).ToArray();
        if (bandwidth is not null && ceilings.Count == 0)
        {
            var line = plot.Add.ScatterLine(roofX, roofX.Select(lx => Math.Log10(bandwidth.Value * Math.Pow(10, lx) / unit)).ToArray());
            line.LegendText = Invariant($"memory {bandwidth:F0} GB/s");
            line.Color = palette.GetColor(colorIndex++);
            line.LineWidth = 2;
        }
        foreach (var (name, peak) in ceilings.OrderByDescending(c => c.Peak))
        {
            double[] ys = roofX.Select(lx =>
            {
                double x = Math.Pow(10, lx);
                double roof = bandwidth is null ? peak : Math.Min(peak, bandwidth.Value * x);
                return Math.Log10(roof / unit);
            }).ToArray();
            var line = plot.Add.ScatterLine(roofX, ys);
            line.LegendText = Invariant($"{name} peak {peak / unit:G4} {unitName}") + (bandwidth is null ? "" : Invariant($", memory {bandwidth:F0} GB/s"));
            line.Color = palette.GetColor(colorIndex++);
            line.LineWidth = 2;
        }

        var dots = plot.Add.ScatterPoints(
            points.Select(p => Math.Log10(p.ArithmeticIntensity)).ToArray(),
            points.Select(p => Math.Log10(p.Gflops / unit)).ToArray());
        dots.Color = Colors.Black;
        dots.MarkerSize = 9;
        dots.LegendText = "measured (median)";
        foreach (var p in points)
        {
            var label = plot.Add.Text(p.Name, Math.Log10(p.ArithmeticIntensity), Math.Log10(p.Gflops / unit));
            label.LabelFontSize = 12;
            label.LabelOffsetX = 6;
            label.LabelOffsetY = -6;
            label.LabelAlignment = Alignment.LowerLeft;
        }

        plot.Axes.Bottom.TickGenerator = LogTicks();
        plot.Axes.Left.TickGenerator = LogTicks();
        plot.XLabel("Arithmetic intensity (FLOP/byte)");
        plot.YLabel($"Throughput ({unitName})");
        plot.Title(title ?? $"Roofline: {report.Backend} on {report.Machine.Name} ({report.Machine.PeakSource} ceilings)");
        double yTop = new[] { ceilings.Count > 0 ? ceilings.Max(c => c.Peak) : 0, points.Max(p => p.Gflops) }.Max() / unit;
        double yBottom = Math.Min(points.Min(p => p.Gflops) / unit, bandwidth is null ? double.MaxValue : bandwidth.Value * xMin / unit);
        plot.Axes.SetLimits(Math.Log10(xMin), Math.Log10(xMax), Math.Floor(Math.Log10(yBottom)) - 0.5, Math.Ceiling(Math.Log10(yTop)) + 0.5);
        plot.ShowLegend(Alignment.LowerRight);
        return plot;
    }

    private static ScottPlot.TickGenerators.NumericAutomatic LogTicks() => new()
    {
        MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
        IntegerTicksOnly = true,
        LabelFormatter = v => Math.Abs(v) >= 4
            ? "1e" + Math.Round(v).ToString(CultureInfo.InvariantCulture)
            : Math.Pow(10, v).ToString("G4", CultureInfo.InvariantCulture),
    };

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
