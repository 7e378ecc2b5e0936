using DeepKernels.Cli;
using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Tests.Diagnostics;

public class PlotCommandTests
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    private static BenchReport SmallReport(bool withResults = true)
    {
        OpBenchCase Case(string name, double flops, double bytes) =>
            new("gemm", name, new Dictionary<string, long> { ["M"] = 1 }, flops, bytes, MathPrecision.Fp8, BenchTargets.Cuda, _ => throw new NotSupportedException());
        var limits = BenchLimits.FromDevice(DevicePeaks.H200);
        var results = withResults
            ? new[]
            {
                BenchRunner.Summarize(Case("gemm M=4096 N=7168 K=16384", 9.6e11, 3.2e8), [0.9], limits),
                BenchRunner.Summarize(Case("gemm M=1 N=7168 K=16384", 2.3e8, 1.2e8), [0.03], limits),
            }
            : [];
        return new BenchReport(BenchReport.SchemaId, DateTime.UtcNow, "cuda", true, null, "cuda-events", 3, 10,
            new BenchMachine("NVIDIA H200", 90, "datasheet", "test"), limits, results);
    }

    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void WritesAValidPng()
    {
        string dir = Directory.CreateTempSubdirectory("dk-plot-").FullName;
        try
        {
            string json = Path.Combine(dir, "bench.json"), png = Path.Combine(dir, "sub", "roofline.png");
            File.WriteAllText(json, SmallReport().ToJson());
            var (code, output, err) = Cli("plot", "--json", json, "--output", png, "--width", "800", "--height", "600");
            Assert.That(code, Is.EqualTo(0), err);
            Assert.That(output, Does.Contain("2 points"));
            byte[] bytes = File.ReadAllBytes(png);
            Assert.That(bytes.Take(8), Is.EqualTo(PngSignature));
            Assert.That(bytes.Length, Is.GreaterThan(10_000), "a chart with axes, roofs and labels is not a near-empty image");
            // IHDR carries the requested size (big-endian width and height at offsets 16 and 20).
            Assert.That((bytes[16] << 24) | (bytes[17] << 16) | (bytes[18] << 8) | bytes[19], Is.EqualTo(800));
            Assert.That((bytes[20] << 24) | (bytes[21] << 16) | (bytes[22] << 8) | bytes[23], Is.EqualTo(600));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void RejectsMissingOrEmptyReports()
    {
        string dir = Directory.CreateTempSubdirectory("dk-plot-").FullName;
        try
        {
            var (code, _, err) = Cli("plot", "--output", Path.Combine(dir, "x.png"));
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("--json"));
            (code, _, err) = Cli("plot", "--json", Path.Combine(dir, "none.json"));
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("does not exist"));
            string empty = Path.Combine(dir, "empty.json");
            File.WriteAllText(empty, SmallReport(withResults: false).ToJson());
            (code, _, err) = Cli("plot", "--json", empty, "--output", Path.Combine(dir, "x.png"));
            Assert.That(code, Is.EqualTo(1));
            Assert.That(err, Does.Contain("no results"));
            Assert.That(File.Exists(Path.Combine(dir, "x.png")), Is.False);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
