using System.Text.Json;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Checkpoint;

/// <summary>
/// Writes a safetensors file: tensors are added in order (name, dtype, shape, bytes), then
/// <see cref="Save"/> writes the header (padded with spaces to a multiple of 8 bytes) and the
/// data into a temporary file that is renamed over the target, so a failure never leaves a
/// partial checkpoint behind.
/// </summary>
public sealed class CheckpointWriter
{
    private readonly List<(string Name, DType DType, long[] Shape, byte[] Data)> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Tensors added so far.</summary>
    public int Count => _tensors.Count;

    /// <summary>Bytes of tensor data added so far.</summary>
    public long DataBytes => _tensors.Sum(t => (long)t.Data.Length);

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

    /// <summary>Removes a tensor added before; returns whether it was present.</summary>
    public bool Remove(string name)
    {
        int i = _tensors.FindIndex(t => t.Name == name);
        if (i < 0) return false;
        _tensors.RemoveAt(i);
        _names.Remove(name);
        return true;
    }

    /// <summary>Names added so far, in order.</summary>
    public IEnumerable<string> Names => _tensors.Select(t => t.Name);

    /// <summary>Adds a tensor from typed values.</summary>
    public void Add<T>(string name, DType dtype, long[] shape, ReadOnlySpan<T> values) where T : unmanaged =>
        Add(name, dtype, shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));

    /// <summary>The header bytes (JSON padded with spaces to a multiple of 8).</summary>
    public byte[] BuildHeader(IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in _tensors)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.SafetensorsName());
                w.WriteStartArray("shape");
                foreach (long d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.Data.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.Data.Length;
            }
            w.WriteEndObject();
        }
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }

    /// <summary>Writes the file atomically (temporary file, then rename).</summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] header = BuildHeader(metadata);
        string temp = path + ".tmp-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            using (var fs = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> prefix = stackalloc byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                fs.Write(prefix);
                fs.Write(header);
                foreach (var t in _tensors) fs.Write(t.Data);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>The bytes of a whole file in memory (for tests).</summary>
    public byte[] ToBytes()
    {
        byte[] header = BuildHeader();
        using var ms = new MemoryStream();
        Span<byte> prefix = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
        ms.Write(prefix);
        ms.Write(header);
        foreach (var t in _tensors) ms.Write(t.Data);
        return ms.ToArray();
    }
}
