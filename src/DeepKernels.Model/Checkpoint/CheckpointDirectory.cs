using System.Text.Json;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Checkpoint;

/// <summary>
/// The tensors of a checkpoint directory: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (its <c>weight_map</c> names the shard of each tensor), or
/// else every <c>*.safetensors</c> file in the directory. Typed lookups check dtype and shape and
/// throw a <see cref="CheckpointException"/> naming the file and tensor.
/// </summary>
public sealed class CheckpointDirectory : IDisposable
{
    private readonly List<CheckpointFile> _files = [];
    private readonly Dictionary<string, CheckpointFile> _owner = new(StringComparer.Ordinal);

    /// <summary>The directory.</summary>
    public string Path { get; }

    /// <summary>The opened files.</summary>
    public IReadOnlyList<CheckpointFile> Files => _files;

    /// <summary>Every tensor name.</summary>
    public IEnumerable<string> Names => _owner.Keys;

    private CheckpointDirectory(string path) => Path = path;

    /// <summary>Opens the checkpoint files of <paramref name="directory"/>.</summary>
    public static CheckpointDirectory Open(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Checkpoint directory not found: {directory}");
        var result = new CheckpointDirectory(directory);
        try
        {
            string index = System.IO.Path.Combine(directory, "model.safetensors.index.json");
            if (File.Exists(index)) result.OpenIndexed(index);
            else
            {
                var files = Directory.GetFiles(directory, "*.safetensors").OrderBy(f => f, StringComparer.Ordinal).ToList();
                if (files.Count == 0) throw new CheckpointException(directory, null, "no model.safetensors, model.safetensors.index.json or *.safetensors file found.");
                foreach (string f in files) result.Add(CheckpointFile.Open(f), null);
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    private void OpenIndexed(string index)
    {
        Dictionary<string, string> map = [];
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(index, null, "missing object 'weight_map'.");
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new CheckpointException(index, p.Name, "weight_map values must be file names.");
                string file = p.Value.GetString()!;
                if (file.Contains('/', StringComparison.Ordinal) || file.Contains('\\', StringComparison.Ordinal) || file.Contains("..", StringComparison.Ordinal))
                    throw new CheckpointException(index, p.Name, $"shard name '{file}' must be a plain file name in the checkpoint directory.");
                map[p.Name] = file;
            }
        }
        catch (JsonException e)
        {
            throw new CheckpointException(index, null, $"not valid JSON: {e.Message}", e);
        }
        foreach (var group in map.GroupBy(kv => kv.Value, StringComparer.Ordinal))
        {
            string shard = System.IO.Path.Combine(Path, group.Key);
            if (!File.Exists(shard)) throw new CheckpointException(index, group.First().Key, $"shard '{group.Key}' listed in the index does not exist.");
            var file = CheckpointFile.Open(shard);
            Add(file, null);
            foreach (var (name, _) in group)
            {
                if (!file.Contains(name)) throw new CheckpointException(shard, name, "listed in model.safetensors.index.json but not present in the shard.");
            }
        }
    }

    private void Add(CheckpointFile file, string? _)
    {
        _files.Add(file);
        foreach (string name in file.Names)
        {
            if (_owner.TryGetValue(name, out var other))
                throw new CheckpointException(file.Path, name, $"also present in {other.Path}.");
            _owner[name] = file;
        }
    }

    /// <summary>Whether a tensor exists.</summary>
    public bool Contains(string name) => _owner.ContainsKey(name);

    /// <summary>The entry of a tensor; throws naming the directory and tensor when missing.</summary>
    public CheckpointTensor Get(string name) =>
        _owner.TryGetValue(name, out var f) ? f[name] : throw new CheckpointException(Path, name, "missing from the checkpoint.");

    /// <summary>The entry of a tensor checked against the expected dtypes and shape.</summary>
    public CheckpointTensor Get(string name, ReadOnlySpan<DType> dtypes, params ReadOnlySpan<long> shape)
    {
        var t = Get(name);
        if (!dtypes.Contains(t.DType))
            throw new CheckpointException(t.File, name, $"expected dtype {string.Join(" or ", dtypes.ToArray().Select(d => d.SafetensorsName()))}, got {t.Describe()}.");
        if (!t.Shape.AsSpan().SequenceEqual(shape))
            throw new CheckpointException(t.File, name, $"expected shape [{string.Join(", ", shape.ToArray())}], got {t.Describe()}.");
        return t;
    }

    /// <summary>The bytes of a tensor.</summary>
    public ReadOnlySpan<byte> Bytes(CheckpointTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return _owner[tensor.Name].Bytes(tensor);
    }

    /// <summary>Unmaps every file.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
