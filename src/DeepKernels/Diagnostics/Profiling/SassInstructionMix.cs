using System.Text.RegularExpressions;

namespace DeepKernels.Diagnostics.Profiling;

/// <summary>Static SASS instruction counts of one kernel for one arch (from <c>cuobjdump -sass</c>).</summary>
/// <param name="Kernel">Kernel name.</param>
/// <param name="Arch">Arch, e.g. "sm_90a".</param>
/// <param name="Total">All instructions, NOPs included.</param>
/// <param name="ByOpcode">Counts per base opcode (the mnemonic before the first '.', e.g. "LDG" for LDG.E.128).</param>
public sealed record SassInstructionMix(string Kernel, string Arch, int Total, IReadOnlyDictionary<string, int> ByOpcode)
{
    /// <summary>The opcodes the profile table shows: tensor-core math, FMA, memory traffic, barriers, shuffles.</summary>
    public static IReadOnlyList<string> KeyOpcodes { get; } = ["HGMMA", "QGMMA", "HMMA", "FFMA", "LDG", "LDS", "STS", "LDGSTS", "UTMALDG", "BAR", "SHFL"];

    /// <summary>The count of one base opcode (0 when absent).</summary>
    public int Count(string opcode) => ByOpcode.GetValueOrDefault(opcode);
}

/// <summary>Parses <c>cuobjdump -sass</c> listings.</summary>
public static partial class SassParser
{
    /// <summary>One mix per (kernel, arch) in the listing, in order of appearance.</summary>
    public static IReadOnlyList<SassInstructionMix> Parse(string listing)
    {
        ArgumentNullException.ThrowIfNull(listing);
        var result = new List<SassInstructionMix>();
        string? arch = null, kernel = null;
        Dictionary<string, int>? counts = null;
        int total = 0;

        void Flush()
        {
            if (kernel is not null && arch is not null && counts is not null)
                result.Add(new SassInstructionMix(kernel, arch, total, counts));
            kernel = null;
            counts = null;
            total = 0;
        }

        foreach (string raw in listing.Split('\n'))
        {
            string line = raw.Trim();
            var cm = CodeForRegex().Match(line);
            if (cm.Success) { Flush(); arch = "sm_" + cm.Groups[1].Value.ToLowerInvariant(); continue; }
            var fm = FunctionRegex().Match(line);
            if (fm.Success) { Flush(); kernel = fm.Groups[1].Value; counts = new Dictionary<string, int>(StringComparer.Ordinal); continue; }
            if (counts is null) continue;
            var im = InstructionRegex().Match(line);
            if (!im.Success) continue;
            string opcode = im.Groups[1].Value;
            int dot = opcode.IndexOf('.', StringComparison.Ordinal);
            if (dot > 0) opcode = opcode[..dot];
            counts[opcode] = counts.GetValueOrDefault(opcode) + 1;
            total++;
        }
        Flush();
        return result;
    }

    [GeneratedRegex(@"^code for sm_(\d+a?)\b")]
    private static partial Regex CodeForRegex();

    [GeneratedRegex(@"^Function : (\S+)")]
    private static partial Regex FunctionRegex();

    // "/*0110*/   @!P0 BAR.SYNC 0x0 ;" -> "BAR.SYNC" (an optional predicate precedes the opcode).
    [GeneratedRegex(@"^/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")]
    private static partial Regex InstructionRegex();
}
