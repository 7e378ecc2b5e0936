using System.Reflection;

namespace DeepKernels.Cuda.Kernels;

/// <summary>
/// The kernels this assembly carries: the fatbin and the build's resource report and signature
/// table, embedded as resources by the native build. <c>DEEPKERNELS_FATBIN=/path/file.fatbin</c>
/// replaces the fatbin (for example one built for sm_90a on a GPU host); the reports next to it
/// (<c>resource-report.json</c>, <c>kernel-signatures.json</c>) then replace the embedded ones.
/// </summary>
public sealed class KernelImage
{
    /// <summary>The environment variable that points at a fatbin on disk.</summary>
    public const string FatbinEnvironmentVariable = "DEEPKERNELS_FATBIN";

    internal const string FatbinResource = "DeepKernels.deepkernels.fatbin";
    internal const string ReportResource = "DeepKernels.resource-report.json";
    internal const string SignaturesResource = "DeepKernels.kernel-signatures.json";

    private static readonly Lazy<KernelImage> Lazy = new(() => Load(Environment.GetEnvironmentVariable(FatbinEnvironmentVariable)));

    internal KernelImage(byte[] fatbin, string source, ResourceReport? report, KernelSignatureTable? signatures, string? problem)
    {
        Fatbin = fatbin;
        Source = source;
        Report = report;
        Signatures = signatures;
        Problem = problem;
    }

    /// <summary>The image of this process (embedded, or from <see cref="FatbinEnvironmentVariable"/>), loaded once.</summary>
    public static KernelImage Current => Lazy.Value;

    /// <summary>The fatbin bytes; empty when kernels were not built.</summary>
    public ReadOnlyMemory<byte> Fatbin { get; }

    /// <summary>Where the fatbin came from: "embedded", a file path, or "none".</summary>
    public string Source { get; }

    /// <summary>The resource report, or null when none is available.</summary>
    public ResourceReport? Report { get; }

    /// <summary>The kernel signature table, or null when none is available.</summary>
    public KernelSignatureTable? Signatures { get; }

    /// <summary>Why something is missing or unreadable (null when all is well).</summary>
    public string? Problem { get; }

    /// <summary>Whether a fatbin is present.</summary>
    public bool HasFatbin => !Fatbin.IsEmpty;

    /// <summary>Loads the embedded image, or the one at <paramref name="fatbinPath"/> when given.</summary>
    internal static KernelImage Load(string? fatbinPath)
    {
        var problems = new List<string>();
        var assembly = typeof(KernelImage).Assembly;
        byte[] fatbin;
        string source;
        string? reportJson = null, signaturesJson = null;
        if (!string.IsNullOrWhiteSpace(fatbinPath))
        {
            source = fatbinPath;
            try
            {
                fatbin = File.ReadAllBytes(fatbinPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
            {
                fatbin = [];
                problems.Add($"{FatbinEnvironmentVariable}={fatbinPath} could not be read: {e.Message}");
            }
            string dir = Path.GetDirectoryName(Path.GetFullPath(fatbinPath)) ?? ".";
            reportJson = TryReadFile(Path.Combine(dir, "resource-report.json"));
            signaturesJson = TryReadFile(Path.Combine(dir, "kernel-signatures.json"));
        }
        else
        {
            fatbin = ReadResource(assembly, FatbinResource) ?? [];
            source = fatbin.Length > 0 ? "embedded" : "none";
            if (fatbin.Length == 0) problems.Add("no fatbin is embedded (the native build did not run, or found no CUDA compiler)");
        }
        reportJson ??= ReadText(assembly, ReportResource);
        signaturesJson ??= ReadText(assembly, SignaturesResource);
        ResourceReport? report = null;
        KernelSignatureTable? signatures = null;
        try
        {
            if (reportJson is not null) report = ResourceReport.Parse(reportJson);
        }
        catch (InvalidDataException e)
        {
            problems.Add(e.Message);
        }
        try
        {
            if (signaturesJson is not null) signatures = KernelSignatureTable.Parse(signaturesJson);
        }
        catch (InvalidDataException e)
        {
            problems.Add(e.Message);
        }
        return new KernelImage(fatbin, source, report, signatures, problems.Count == 0 ? null : string.Join("; ", problems));
    }

    private static string? TryReadFile(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static byte[]? ReadResource(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream(name);
        if (stream is null) return null;
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    private static string? ReadText(Assembly assembly, string name)
    {
        var bytes = ReadResource(assembly, name);
        return bytes is null ? null : System.Text.Encoding.UTF8.GetString(bytes);
    }
}
