using System.Text.Json;

namespace DeepKernels.Model.Safetensors;

/// <summary>
/// A checkpoint made of one or more safetensors files: a directory holding
/// <c>model.safetensors.index.json</c> (Hugging Face sharding: <c>weight_map</c> name -> shard
/// file), a directory of <c>*.safetensors</c> files, or a single file. Tensors are looked up by
/// name across shards; all shards stay mapped until <see cref="Dispose"/>.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    /// <summary>The index file name of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsTensor> _tensors;

    private SafetensorsCheckpoint(List<SafetensorsFile> files, Dictionary<string, SafetensorsTensor> tensors)
    {
        _files = files;
        _tensors = tensors;
    }

    /// <summary>The opened files (shards).</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>Every tensor name, in shard order then header order.</summary>
    public IEnumerable<string> TensorNames => _tensors.Keys;

    /// <summary>Whether a tensor of that name exists.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The tensor of that name; <see cref="KeyNotFoundException"/> otherwise.</summary>
    public SafetensorsTensor this[string name] =>
        _tensors.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"No tensor named '{name}' in the checkpoint.");

    /// <summary>Looks a tensor up by name.</summary>
    public bool TryGetTensor(string name, out SafetensorsTensor tensor) => _tensors.TryGetValue(name, out tensor!);

    /// <summary>
    /// Opens a checkpoint: a sharded directory (index file), a directory of safetensors files,
    /// or one safetensors file. Duplicate tensor names across files, shards missing from disk,
    /// and index entries that name absent tensors are reported as <see cref="SafetensorsFormatException"/>.
    /// </summary>
    public static SafetensorsCheckpoint Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var files = new List<SafetensorsFile>();
        try
        {
            if (File.Exists(path))
            {
                files.Add(SafetensorsFile.Open(path));
                return Build(files, null, path);
            }
            if (!Directory.Exists(path)) throw new FileNotFoundException($"No checkpoint file or directory at '{path}'.", path);
            string index = Path.Combine(path, IndexFileName);
            if (File.Exists(index))
            {
                var weightMap = ReadWeightMap(index);
                foreach (string shard in weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
                {
                    string shardPath = Path.Combine(path, shard);
                    if (!File.Exists(shardPath)) throw new SafetensorsFormatException(index, null, $"shard '{shard}' named by weight_map does not exist.");
                    files.Add(SafetensorsFile.Open(shardPath));
                }
                return Build(files, weightMap, index);
            }
            var all = Directory.GetFiles(path, "*.safetensors").Order(StringComparer.Ordinal).ToList();
            if (all.Count == 0) throw new FileNotFoundException($"No {IndexFileName} or *.safetensors files in '{path}'.", path);
            foreach (string f in all) files.Add(SafetensorsFile.Open(f));
            return Build(files, null, path);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(index, null, "expected an object with a 'weight_map' object.");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsFormatException(index, p.Name, "weight_map values must be file names.");
                string file = p.Value.GetString()!;
                if (file.Length == 0 || Path.IsPathRooted(file) || file.Contains("..", StringComparison.Ordinal))
                    throw new SafetensorsFormatException(index, p.Name, $"shard name '{file}' must be a plain relative file name.");
                result[p.Name] = file;
            }
            return result;
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(index, null, $"not valid JSON: {e.Message}", e);
        }
    }

    private static SafetensorsCheckpoint Build(List<SafetensorsFile> files, Dictionary<string, string>? weightMap, string origin)
    {
        var tensors = new Dictionary<string, SafetensorsTensor>(StringComparer.Ordinal);
        foreach (var file in files)
        {
            foreach (var t in file.Tensors)
            {
                if (weightMap is not null && weightMap.TryGetValue(t.Name, out string? shard)
                    && !string.Equals(Path.GetFileName(file.Path), Path.GetFileName(shard), StringComparison.Ordinal))
                    continue; // the index assigns this name to another shard
                if (!tensors.TryAdd(t.Name, t))
                    throw new SafetensorsFormatException(file.Path, t.Name, $"also present in '{tensors[t.Name].File.Path}'.");
            }
        }
        if (weightMap is not null)
        {
            foreach (var (name, shard) in weightMap)
                if (!tensors.ContainsKey(name)) throw new SafetensorsFormatException(origin, name, $"listed in weight_map for '{shard}' but absent from that file.");
        }
        return new SafetensorsCheckpoint(files, tensors);
    }

    /// <summary>Unmaps every shard.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
