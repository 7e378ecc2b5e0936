using System.Buffers.Binary;
using System.Text.Json;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Safetensors;

/// <summary>A tensor to be written: name, dtype and shape (the byte count follows).</summary>
public sealed record SafetensorsTensorSpec(string Name, DType DType, IReadOnlyList<long> Shape)
{
    /// <summary>Bytes of data: product(shape) * element size.</summary>
    public long ByteLength
    {
        get
        {
            long n = DType.SizeInBytes();
            foreach (long d in Shape) n = checked(n * d);
            return n;
        }
    }
}

/// <summary>Receives one tensor's bytes in order (possibly in many pieces).</summary>
public interface ISafetensorsSink
{
    /// <summary>Appends bytes to the current tensor.</summary>
    void Write(ReadOnlySpan<byte> data);
}

/// <summary>
/// Streams a safetensors file: the header (all tensor specs, declared up front, plus optional
/// <c>__metadata__</c>) is written first, padded with spaces so the data section starts at a
/// multiple of 8 bytes; then each tensor's bytes are written in the declared order, whole or in
/// pieces, so no tensor has to be held in memory at once. <see cref="Complete"/> checks that
/// every tensor was written in full.
/// </summary>
public sealed class SafetensorsWriter : IDisposable
{
    private readonly Stream _stream;
    private readonly bool _ownsStream;
    private readonly IReadOnlyList<SafetensorsTensorSpec> _specs;
    private int _next;

    /// <summary>Writes the header of <paramref name="tensors"/> to <paramref name="stream"/>.</summary>
    public SafetensorsWriter(Stream stream, IReadOnlyList<SafetensorsTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata = null, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensors);
        _stream = stream;
        _ownsStream = !leaveOpen;
        _specs = tensors;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (string.IsNullOrEmpty(t.Name) || t.Name == "__metadata__")
                throw new ArgumentException($"Invalid tensor name '{t.Name}'.", nameof(tensors));
            if (!names.Add(t.Name)) throw new ArgumentException($"Tensor '{t.Name}' is declared twice.", nameof(tensors));
            foreach (long d in t.Shape)
                if (d < 0) throw new ArgumentException($"Tensor '{t.Name}' has a negative dimension {d}.", nameof(tensors));
        }
        byte[] header = BuildHeader(tensors, metadata);
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
        _stream.Write(prefix);
        _stream.Write(header);
    }

    /// <summary>Creates (or overwrites) a file and writes the header.</summary>
    public static SafetensorsWriter Create(string path, IReadOnlyList<SafetensorsTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        new(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20), tensors, metadata);

    private static byte[] BuildHeader(IReadOnlyList<SafetensorsTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType.SafetensorsName());
                json.WriteStartArray("shape");
                foreach (long d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += t.ByteLength;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        // Pad with spaces (JSON whitespace) so the data section is 8-byte aligned.
        while ((8 + buffer.Length) % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    /// <summary>The next tensor to be written, or null when all are done.</summary>
    public SafetensorsTensorSpec? Next => _next < _specs.Count ? _specs[_next] : null;

    /// <summary>Writes the whole of the next tensor, which must be <paramref name="name"/>.</summary>
    public void WriteTensor(string name, ReadOnlySpan<byte> data)
    {
        var spec = Expect(name);
        if (data.Length != spec.ByteLength)
            throw new ArgumentException($"Tensor '{name}' needs {spec.ByteLength} bytes, got {data.Length}.", nameof(data));
        _stream.Write(data);
        _next++;
    }

    /// <summary>
    /// Writes the next tensor, which must be <paramref name="name"/>, through a callback that
    /// may call <see cref="ISafetensorsSink.Write"/> any number of times; the total must match.
    /// </summary>
    public void WriteTensor(string name, Action<ISafetensorsSink> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        var spec = Expect(name);
        var sink = new Sink(_stream, spec);
        write(sink);
        if (sink.Written != spec.ByteLength)
            throw new InvalidOperationException($"Tensor '{name}' needs {spec.ByteLength} bytes, the callback wrote {sink.Written}.");
        _next++;
    }

    private SafetensorsTensorSpec Expect(string name)
    {
        if (_next >= _specs.Count) throw new InvalidOperationException($"All {_specs.Count} declared tensors are written; '{name}' is extra.");
        var spec = _specs[_next];
        if (spec.Name != name) throw new InvalidOperationException($"Tensors must be written in declared order: expected '{spec.Name}', got '{name}'.");
        return spec;
    }

    /// <summary>Checks that every declared tensor was written and flushes the stream.</summary>
    public void Complete()
    {
        if (_next != _specs.Count)
            throw new InvalidOperationException($"Only {_next} of {_specs.Count} tensors were written; next is '{_specs[_next].Name}'.");
        _stream.Flush();
    }

    /// <summary>Closes the stream if the writer owns it.</summary>
    public void Dispose()
    {
        if (_ownsStream) _stream.Dispose();
    }

    private sealed class Sink(Stream stream, SafetensorsTensorSpec spec) : ISafetensorsSink
    {
        public long Written { get; private set; }

        public void Write(ReadOnlySpan<byte> data)
        {
            if (Written + data.Length > spec.ByteLength)
                throw new InvalidOperationException($"Tensor '{spec.Name}' needs {spec.ByteLength} bytes; writing {data.Length} more after {Written} overflows it.");
            stream.Write(data);
            Written += data.Length;
        }
    }
}
