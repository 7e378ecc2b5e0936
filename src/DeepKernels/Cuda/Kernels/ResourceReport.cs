using System.Text.Json;

namespace DeepKernels.Cuda.Kernels;

/// <summary>Registers, shared memory, stack and spills of one kernel compiled for one arch (from ptxas -v).</summary>
/// <param name="Name">The <c>extern "C"</c> kernel name.</param>
/// <param name="Arch">The arch it was compiled for, e.g. "sm_90".</param>
/// <param name="Registers">Registers per thread.</param>
/// <param name="SharedBytes">Static shared memory per block in bytes.</param>
/// <param name="StackBytes">Stack frame per thread in bytes.</param>
/// <param name="SpillStores">Bytes of spill stores per thread.</param>
/// <param name="SpillLoads">Bytes of spill loads per thread.</param>
public sealed record KernelResourceUsage(string Name, string Arch, int Registers, int SharedBytes, int StackBytes, int SpillStores, int SpillLoads);

/// <summary>
/// The native build's resource report (<c>resource-report.json</c>): the compiler, the archs in the
/// fatbin (SASS <c>sm_XY</c> and PTX <c>compute_XY</c>), and per kernel and arch the resources
/// ptxas reported.
/// </summary>
public sealed class ResourceReport
{
    private ResourceReport(string compiler, IReadOnlyList<string> archs, IReadOnlyList<KernelResourceUsage> kernels)
    {
        Compiler = compiler;
        Archs = archs;
        Kernels = kernels;
    }

    /// <summary>The compiler that built the fatbin, e.g. "nvcc 11.8".</summary>
    public string Compiler { get; }

    /// <summary>The archs in the fatbin: "sm_80", "sm_90", "compute_90", ...</summary>
    public IReadOnlyList<string> Archs { get; }

    /// <summary>One entry per kernel and SASS arch.</summary>
    public IReadOnlyList<KernelResourceUsage> Kernels { get; }

    /// <summary>Distinct kernel names, sorted.</summary>
    public IReadOnlyList<string> KernelNames => Kernels.Select(k => k.Name).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();

    /// <summary>The archs a kernel has entries for, in report order.</summary>
    public IReadOnlyList<string> ArchsOf(string kernel) => Kernels.Where(k => k.Name == kernel).Select(k => k.Arch).Distinct(StringComparer.Ordinal).ToList();

    /// <summary>
    /// The arch of the fatbin the driver would run on a device of compute capability
    /// <paramref name="major"/>.<paramref name="minor"/>, or null when none fits: SASS runs on the
    /// same major version with an equal or higher minor (arch-specific "a" variants only on the
    /// exact version); PTX is JIT-compiled for any equal or newer device.
    /// </summary>
    public string? BestArchFor(int major, int minor)
    {
        int cc = major * 10 + minor;
        string? best = null;
        int bestScore = -1;
        foreach (string arch in Archs)
        {
            if (!TryParseArch(arch, out bool ptx, out int archCc, out bool specific)) continue;
            bool fits = ptx ? archCc <= cc : specific ? archCc == cc : archCc / 10 == major && archCc <= cc;
            if (!fits) continue;
            // Prefer SASS over PTX, then the newest arch, then the arch-specific variant.
            int score = (ptx ? 0 : 10000) + archCc * 10 + (specific ? 1 : 0);
            if (score > bestScore) { bestScore = score; best = arch; }
        }
        return best;
    }

    /// <summary>Parses "sm_90", "sm_90a" or "compute_90".</summary>
    public static bool TryParseArch(string arch, out bool isPtx, out int computeCapability, out bool archSpecific)
    {
        ArgumentNullException.ThrowIfNull(arch);
        isPtx = arch.StartsWith("compute_", StringComparison.Ordinal);
        string digits = isPtx ? arch["compute_".Length..] : arch.StartsWith("sm_", StringComparison.Ordinal) ? arch["sm_".Length..] : "";
        archSpecific = digits.EndsWith('a');
        if (archSpecific) digits = digits[..^1];
        return int.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out computeCapability) && computeCapability > 0;
    }

    /// <summary>Parses the JSON; throws <see cref="InvalidDataException"/> naming the bad field.</summary>
    public static ResourceReport Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException("resource report: expected a JSON object at the top level.");
            string compiler = root.TryGetProperty("compiler", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()! : "unknown";
            var archs = new List<string>();
            if (root.TryGetProperty("archs", out var a))
            {
                if (a.ValueKind != JsonValueKind.Array) throw new InvalidDataException("resource report: 'archs' must be an array of strings.");
                foreach (var item in a.EnumerateArray())
                    archs.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw new InvalidDataException("resource report: 'archs' must be an array of strings."));
            }
            var kernels = new List<KernelResourceUsage>();
            if (root.TryGetProperty("kernels", out var ks))
            {
                if (ks.ValueKind != JsonValueKind.Array) throw new InvalidDataException("resource report: 'kernels' must be an array.");
                int i = 0;
                foreach (var k in ks.EnumerateArray())
                {
                    string where = $"resource report: kernels[{i++}]";
                    kernels.Add(new KernelResourceUsage(
                        Json.RequiredString(k, "name", where),
                        Json.RequiredString(k, "arch", where),
                        Json.OptionalInt(k, "registers", where),
                        Json.OptionalInt(k, "shared_bytes", where),
                        Json.OptionalInt(k, "stack_bytes", where),
                        Json.OptionalInt(k, "spill_stores", where),
                        Json.OptionalInt(k, "spill_loads", where)));
                }
            }
            // Older reports may omit the arch list: derive it from the kernels.
            if (archs.Count == 0) archs.AddRange(kernels.Select(k => k.Arch).Distinct(StringComparer.Ordinal));
            return new ResourceReport(compiler, archs, kernels);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"resource report: invalid JSON: {e.Message}", e);
        }
    }
}
