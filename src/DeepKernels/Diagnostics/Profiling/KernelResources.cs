using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DeepKernels.Diagnostics.Profiling;

/// <summary>What ptxas reports for one kernel compiled for one arch.</summary>
/// <param name="Kernel">Kernel name.</param>
/// <param name="Arch">Arch, e.g. "sm_90".</param>
/// <param name="Registers">Registers per thread.</param>
/// <param name="StaticSharedBytes">Static shared memory per block.</param>
/// <param name="StackBytes">Stack frame per thread.</param>
/// <param name="SpillStoreBytes">Bytes of register spill stores.</param>
/// <param name="SpillLoadBytes">Bytes of register spill loads.</param>
/// <param name="Source">"resource-report" (ptxas -v, from the build) or "cuobjdump" (-res-usage).</param>
public sealed record KernelResources(string Kernel, string Arch, int Registers, long StaticSharedBytes, long StackBytes, long SpillStoreBytes, long SpillLoadBytes, string Source);

/// <summary>
/// Reads kernel resources from the build's resource-report.json (tolerant of its exact layout:
/// an array of entries, or an object holding one under "kernels"/"entries", or nested
/// kernel -> arch -> values; field names matched case- and separator-insensitively) or from
/// <c>cuobjdump -res-usage</c> text.
/// </summary>
public static partial class KernelResourceReader
{
    /// <summary>Parses resource-report.json text.</summary>
    public static IReadOnlyList<KernelResources> ParseReport(string json)
    {
        using var doc = ParseJson(json);
        var result = new List<KernelResources>();
        var root = doc.RootElement;
        if (root.ValueKind == JsonValueKind.Array) ReadEntries(root, result);
        else if (root.ValueKind == JsonValueKind.Object)
        {
            var list = Property(root, "kernels", "entries", "functions", "reports");
            if (list is { ValueKind: JsonValueKind.Array }) ReadEntries(list.Value, result);
            else ReadNested(list ?? root, result);
        }
        if (result.Count == 0) throw new InvalidDataException("Resource report holds no kernel entries.");
        return result;
    }

    private static JsonDocument ParseJson(string json)
    {
        try
        {
            return JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Resource report is not valid JSON: {e.Message}", e);
        }
    }

    private static void ReadEntries(JsonElement array, List<KernelResources> result)
    {
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Object) continue;
            string? kernel = Property(e, "kernel", "name", "function", "entry")?.ToString();
            string? arch = ArchName(Property(e, "arch", "sm", "target", "gpu"));
            if (kernel is null || arch is null) throw new InvalidDataException($"Resource report entry without kernel name or arch: {e}");
            result.Add(FromValues(kernel, arch, e));
        }
    }

    // { "kernel": { "sm_90": { "registers": .. } } } or { "sm_90": { "kernel": {..} } }.
    private static void ReadNested(JsonElement root, List<KernelResources> result)
    {
        foreach (var outer in root.EnumerateObject())
        {
            if (outer.Value.ValueKind != JsonValueKind.Object) continue;
            foreach (var inner in outer.Value.EnumerateObject())
            {
                if (inner.Value.ValueKind != JsonValueKind.Object) continue;
                bool outerIsArch = ArchRegex().IsMatch(outer.Name);
                string kernel = outerIsArch ? inner.Name : outer.Name;
                string arch = outerIsArch ? outer.Name : inner.Name;
                result.Add(FromValues(kernel, ArchName(arch) ?? arch, inner.Value));
            }
        }
    }

    private static KernelResources FromValues(string kernel, string arch, JsonElement e) => new(
        kernel, arch,
        (int)Number(e, "registers", "regs", "numregs", "registercount", "reg"),
        Number(e, "staticsmem", "smem", "sharedbytes", "staticsharedbytes", "staticshared", "shared", "staticsmembytes", "smembytes"),
        Number(e, "stack", "stackbytes", "stackframe", "stackframebytes"),
        Number(e, "spillstores", "spillstorebytes", "spillstoresbytes", "spillstore"),
        Number(e, "spillloads", "spillloadbytes", "spillloadsbytes", "spillload"),
        "resource-report");

    private static string Normalize(string name) => name.Replace("_", "", StringComparison.Ordinal).Replace("-", "", StringComparison.Ordinal).ToLowerInvariant();

    private static JsonElement? Property(JsonElement e, params string[] names)
    {
        foreach (var p in e.EnumerateObject())
            if (names.Contains(Normalize(p.Name))) return p.Value;
        return null;
    }

    private static long Number(JsonElement e, params string[] names)
    {
        var v = Property(e, names);
        if (v is null) return 0;
        if (v.Value.ValueKind == JsonValueKind.Number) return v.Value.GetInt64();
        if (v.Value.ValueKind == JsonValueKind.String && long.TryParse(v.Value.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long n)) return n;
        throw new InvalidDataException($"Resource report field '{names[0]}' is not a number: {v}");
    }

    private static string? ArchName(JsonElement? value) => value switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } n => "sm_" + n.GetInt32().ToString(CultureInfo.InvariantCulture),
        { ValueKind: JsonValueKind.String } s => ArchName(s.GetString()!),
        _ => null,
    };

    private static string? ArchName(string text)
    {
        var m = ArchRegex().Match(text);
        return m.Success ? "sm_" + m.Groups[1].Value.ToLowerInvariant() : null;
    }

    /// <summary>Parses <c>cuobjdump -res-usage</c> output (one "Resource usage" block per ELF arch).</summary>
    public static IReadOnlyList<KernelResources> ParseCuobjdumpResUsage(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<KernelResources>();
        string? arch = null;
        string? function = null;
        bool inElf = false;
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.Trim();
            if (line.StartsWith("Fatbin elf code", StringComparison.Ordinal)) { inElf = true; arch = null; continue; }
            if (line.StartsWith("Fatbin ptx code", StringComparison.Ordinal)) { inElf = false; arch = null; continue; }
            if (!inElf) continue;
            var am = HeaderArchRegex().Match(line);
            if (am.Success) { arch = "sm_" + am.Groups[1].Value.ToLowerInvariant(); continue; }
            var fm = FunctionRegex().Match(line);
            if (fm.Success) { function = fm.Groups[1].Value; continue; }
            if (function is not null && arch is not null && line.StartsWith("REG:", StringComparison.Ordinal))
            {
                var values = ResValueRegex().Matches(line).ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
                result.Add(new KernelResources(function, arch, (int)values.GetValueOrDefault("REG"), values.GetValueOrDefault("SHARED"),
                    values.GetValueOrDefault("STACK"), 0, 0, "cuobjdump"));
                function = null;
            }
        }
        return result;
    }

    [GeneratedRegex(@"sm_?(\d+a?)", RegexOptions.IgnoreCase)]
    private static partial Regex ArchRegex();

    [GeneratedRegex(@"^arch = sm_(\d+a?)$")]
    private static partial Regex HeaderArchRegex();

    [GeneratedRegex(@"^Function (\S+?):$")]
    private static partial Regex FunctionRegex();

    [GeneratedRegex(@"([A-Z]+(?:\[\d+\])?):(\d+)")]
    private static partial Regex ResValueRegex();
}
