using DeepKernels.Model.Safetensors;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Checkpoint;

/// <summary>
/// Collects tensors in memory (name, dtype, shape, bytes) and writes them as one safetensors
/// file through <see cref="SafetensorsWriter"/>. <see cref="Save"/> writes into a temporary file
/// renamed over the target, so a failure never leaves a partial checkpoint behind. Used by the
/// tiny preset and by tests that build checkpoint variants.
/// </summary>
public sealed class CheckpointWriter
{
    private readonly List<(string Name, DType DType, long[] Shape, byte[] Data)> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Tensors added so far.</summary>
    public int Count => _tensors.Count;

    /// <summary>Bytes of tensor data added so far.</summary>
    public long DataBytes => _tensors.Sum(t => (long)t.Data.Length);

    /// <summary>Names added so far, in order.</summary>
    public IEnumerable<string> Names => _tensors.Select(t => t.Name);

    /// <summary>Adds a tensor; the byte count must match the dtype and shape.</summary>
    public void Add(string name, DType dtype, long[] shape, ReadOnlySpan<byte> data)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (!_names.Add(name)) throw new ArgumentException($"Tensor '{name}' was already added.", nameof(name));
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(shape), d, $"Tensor '{name}': dimensions must be >= 0.");
            count = checked(count * d);
        }
        if (count * dtype.SizeInBytes() != data.Length)
            throw new ArgumentException($"Tensor '{name}': {dtype}[{string.Join(", ", shape)}] needs {count * dtype.SizeInBytes()} bytes, got {data.Length}.", nameof(data));
        _tensors.Add((name, dtype, (long[])shape.Clone(), data.ToArray()));
    }

    /// <summary>Adds a tensor from typed values.</summary>
    public void Add<T>(string name, DType dtype, long[] shape, ReadOnlySpan<T> values) where T : unmanaged =>
        Add(name, dtype, shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));

    /// <summary>Removes a tensor added before; returns whether it was present.</summary>
    public bool Remove(string name)
    {
        int i = _tensors.FindIndex(t => t.Name == name);
        if (i < 0) return false;
        _tensors.RemoveAt(i);
        _names.Remove(name);
        return true;
    }

    /// <summary>Writes the tensors to <paramref name="stream"/> as a safetensors file.</summary>
    public void WriteTo(Stream stream, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var specs = _tensors.Select(t => new SafetensorsTensorSpec(t.Name, t.DType, t.Shape)).ToList();
        using var writer = new SafetensorsWriter(stream, specs, metadata, leaveOpen: true);
        foreach (var t in _tensors) writer.WriteTensor(t.Name, t.Data);
        writer.Complete();
    }

    /// <summary>Writes the file atomically (temporary file, then rename).</summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string temp = path + ".tmp-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            using (var fs = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
                WriteTo(fs, metadata);
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>The bytes of the whole file in memory (for tests).</summary>
    public byte[] ToBytes()
    {
        using var ms = new MemoryStream();
        WriteTo(ms);
        return ms.ToArray();
    }
}
