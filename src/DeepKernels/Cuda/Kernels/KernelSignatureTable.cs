using System.Text.Json;

namespace DeepKernels.Cuda.Kernels;

/// <summary>One kernel parameter as the native build declared it.</summary>
/// <param name="Name">Parameter name.</param>
/// <param name="Type">C type, e.g. "const void*" or "int".</param>
/// <param name="Size">Size in bytes.</param>
public sealed record KernelParameter(string Name, string Type, int Size)
{
    /// <summary>The argument kind the C type calls for.</summary>
    public KernelArgKind Kind
    {
        get
        {
            string t = Type.Replace("const", "", StringComparison.Ordinal).Trim();
            if (t.EndsWith('*')) return KernelArgKind.Pointer;
            if (t is "float" or "double" or "__half" or "half" or "__nv_bfloat16") return KernelArgKind.Float;
            if (t is "int" or "unsigned" or "unsigned int" or "int32_t" or "uint32_t" or "int64_t" or "uint64_t" or "long" or "long long"
                or "unsigned long long" or "size_t" or "char" or "unsigned char" or "short" or "unsigned short" or "bool") return KernelArgKind.Integer;
            return KernelArgKind.Bytes;
        }
    }
}

/// <summary>A kernel's parameter list.</summary>
/// <param name="Name">The <c>extern "C"</c> kernel name.</param>
/// <param name="Parameters">The parameters in order.</param>
public sealed record KernelSignature(string Name, IReadOnlyList<KernelParameter> Parameters)
{
    /// <summary>"name(type a, type b, ...)" for messages.</summary>
    public override string ToString() => $"{Name}({string.Join(", ", Parameters.Select(p => $"{p.Type} {p.Name}"))})";
}

/// <summary>
/// The per-kernel signature table the native build generates (<c>kernel-signatures.json</c>).
/// Launches are checked against it (argument count, sizes and kinds) before any native call, so a
/// wrong launch is an <see cref="ArgumentException"/>, on the real driver and the emulator alike.
/// </summary>
public sealed class KernelSignatureTable
{
    private readonly Dictionary<string, KernelSignature> _kernels;

    private KernelSignatureTable(Dictionary<string, KernelSignature> kernels) => _kernels = kernels;

    /// <summary>The kernels, sorted by name.</summary>
    public IReadOnlyList<KernelSignature> Kernels => _kernels.Values.OrderBy(k => k.Name, StringComparer.Ordinal).ToList();

    /// <summary>Looks a kernel up by name.</summary>
    public bool TryGet(string name, out KernelSignature signature) => _kernels.TryGetValue(name, out signature!);

    /// <summary>
    /// Checks <paramref name="arguments"/> against the signature of <paramref name="kernel"/>;
    /// throws <see cref="ArgumentException"/> naming the kernel and the mismatch.
    /// </summary>
    public KernelSignature Validate(string kernel, ReadOnlySpan<KernelArg> arguments)
    {
        if (!_kernels.TryGetValue(kernel, out var signature))
            throw new ArgumentException($"Unknown kernel '{kernel}': the signature table has {string.Join(", ", _kernels.Keys.Order(StringComparer.Ordinal))}.", nameof(kernel));
        var p = signature.Parameters;
        if (arguments.Length != p.Count)
            throw new ArgumentException($"Kernel '{kernel}' expects {p.Count} arguments, got {arguments.Length}: {signature}.", nameof(arguments));
        for (int i = 0; i < p.Count; i++)
        {
            var a = arguments[i];
            if (a.Size != p[i].Size)
                throw new ArgumentException($"Kernel '{kernel}' argument {i} ('{p[i].Type} {p[i].Name}') expects {p[i].Size} bytes, got {a}.", nameof(arguments));
            var kind = p[i].Kind;
            if (kind != KernelArgKind.Bytes && a.Kind != KernelArgKind.Bytes && a.Kind != kind)
                throw new ArgumentException($"Kernel '{kernel}' argument {i} ('{p[i].Type} {p[i].Name}') expects {Describe(kind)}, got {a}.", nameof(arguments));
        }
        return signature;
    }

    private static string Describe(KernelArgKind kind) => kind switch
    {
        KernelArgKind.Pointer => "a pointer",
        KernelArgKind.Integer => "an integer",
        KernelArgKind.Float => "a float",
        _ => "a struct",
    };

    /// <summary>Parses the JSON; throws <see cref="InvalidDataException"/> naming the bad field.</summary>
    public static KernelSignatureTable Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("kernels", out var ks) || ks.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException("kernel signatures: expected an object with a 'kernels' array.");
            var kernels = new Dictionary<string, KernelSignature>(StringComparer.Ordinal);
            int i = 0;
            foreach (var k in ks.EnumerateArray())
            {
                string where = $"kernel signatures: kernels[{i++}]";
                string name = Json.RequiredString(k, "name", where);
                if (!k.TryGetProperty("params", out var ps) || ps.ValueKind != JsonValueKind.Array)
                    throw new InvalidDataException($"{where} ('{name}'): expected a 'params' array.");
                var parameters = new List<KernelParameter>();
                int j = 0;
                foreach (var p in ps.EnumerateArray())
                {
                    string pw = $"{where} ('{name}') params[{j++}]";
                    int size = Json.RequiredInt(p, "size", pw);
                    if (size == 0) throw new InvalidDataException($"{pw}: expected 'size' > 0.");
                    parameters.Add(new KernelParameter(Json.RequiredString(p, "name", pw), Json.RequiredString(p, "type", pw), size));
                }
                if (!kernels.TryAdd(name, new KernelSignature(name, parameters)))
                    throw new InvalidDataException($"{where}: kernel '{name}' is listed twice.");
            }
            return new KernelSignatureTable(kernels);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"kernel signatures: invalid JSON: {e.Message}", e);
        }
    }
}
