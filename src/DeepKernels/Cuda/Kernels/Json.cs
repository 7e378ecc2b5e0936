using System.Text.Json;

namespace DeepKernels.Cuda.Kernels;

/// <summary>Small field readers whose errors name the file part and the field.</summary>
internal static class Json
{
    public static string RequiredString(JsonElement obj, string name, string where)
    {
        if (obj.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where}: expected an object.");
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(v.GetString()))
            throw new InvalidDataException($"{where}: expected a non-empty string '{name}'.");
        return v.GetString()!;
    }

    public static int OptionalInt(JsonElement obj, string name, string where)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return 0;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int x) || x < 0)
            throw new InvalidDataException($"{where}: expected '{name}' to be an integer >= 0, got {v.GetRawText()}.");
        return x;
    }

    public static int RequiredInt(JsonElement obj, string name, string where)
    {
        if (!obj.TryGetProperty(name, out _)) throw new InvalidDataException($"{where}: missing integer '{name}'.");
        return OptionalInt(obj, name, where);
    }
}
