using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Checkpoint;

/// <summary>
/// A memory-mapped safetensors file: 8-byte little-endian header length, a UTF-8 JSON header
/// mapping names to {dtype, shape, data_offsets}, then the raw little-endian data. Everything is
/// checked when the file is opened (header inside the file, valid UTF-8 JSON, known dtypes, byte
/// counts matching shapes, offsets inside the data and not overlapping), so reading a tensor
/// later cannot go out of bounds. Any problem is a <see cref="CheckpointException"/>.
/// </summary>
public sealed unsafe class CheckpointFile : IDisposable
{
    /// <summary>Largest header accepted (the format's own limit is 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly Dictionary<string, CheckpointTensor> _tensors;
    private bool _disposed;

    private CheckpointFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePointer, long dataStart, Dictionary<string, CheckpointTensor> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePointer;
        DataStart = dataStart;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>Byte offset of the data section (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>The <c>__metadata__</c> string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensor names in header order.</summary>
    public IEnumerable<string> Names => _tensors.Keys;

    /// <summary>All entries.</summary>
    public IEnumerable<CheckpointTensor> Tensors => _tensors.Values;

    /// <summary>Whether the file holds <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The entry for <paramref name="name"/>; a <see cref="CheckpointException"/> when absent.</summary>
    public CheckpointTensor this[string name] =>
        _tensors.TryGetValue(name, out var t) ? t : throw new CheckpointException(Path, name, "not found in this file.");

    /// <summary>The raw bytes of a tensor of this file, valid until the file is disposed.</summary>
    public ReadOnlySpan<byte> Bytes(CheckpointTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_tensors.TryGetValue(tensor.Name, out var own) || !ReferenceEquals(own, tensor))
            throw new ArgumentException($"Tensor '{tensor.Name}' does not belong to {Path}.", nameof(tensor));
        if (tensor.ByteCount == 0) return [];
        return new ReadOnlySpan<byte>(_base + DataStart + tensor.Begin, checked((int)tensor.ByteCount));
    }

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    public static CheckpointFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint file not found: {path}", path);
        long length = new FileInfo(path).Length;
        if (length < 8) throw new CheckpointException(path, null, $"file is {length} bytes, too short for the 8-byte header length.");
        byte[] headerBytes;
        long headerLength;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            headerLength = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > length - 8 || headerLength < 0)
                throw new CheckpointException(path, null, $"header length {(ulong)headerLength} is larger than the {length - 8} bytes after the length prefix (truncated or corrupt file).");
            if (headerLength > MaxHeaderBytes)
                throw new CheckpointException(path, null, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit.");
            headerBytes = new byte[headerLength];
            stream.ReadExactly(headerBytes);
        }
        long dataStart = 8 + headerLength;
        var (tensors, metadata) = ParseHeader(path, headerBytes, length - dataStart);
        if (length == 0 || tensors.Count == 0 || tensors.Values.All(t => t.ByteCount == 0))
            return new CheckpointFile(path, null, null, null, dataStart, tensors, metadata);
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new CheckpointFile(path, map, view, p + view.PointerOffset, dataStart, tensors, metadata);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    /// <summary>Parses and validates a header against a data section of <paramref name="dataBytes"/> bytes.</summary>
    internal static (Dictionary<string, CheckpointTensor>, IReadOnlyDictionary<string, string>) ParseHeader(string path, byte[] header, long dataBytes)
    {
        string text;
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header);
        }
        catch (DecoderFallbackException e)
        {
            throw new CheckpointException(path, null, $"header is not valid UTF-8 (byte offset {e.Index} of the header).", e);
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(text.TrimEnd(' ', '\0'));
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, null, $"header is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(path, null, $"header must be a JSON object, got {doc.RootElement.ValueKind}.");
            var tensors = new Dictionary<string, CheckpointTensor>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new CheckpointException(path, null, "__metadata__ must be an object of strings.");
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : throw new CheckpointException(path, null, $"__metadata__ value '{m.Name}' must be a string.");
                    continue;
                }
                if (tensors.ContainsKey(prop.Name)) throw new CheckpointException(path, prop.Name, "appears twice in the header.");
                tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataBytes);
            }
            // Data ranges must not overlap (each byte belongs to at most one tensor).
            CheckpointTensor? previous = null;
            foreach (var t in tensors.Values.Where(t => t.ByteCount > 0).OrderBy(t => t.Begin))
            {
                if (previous is not null && t.Begin < previous.End)
                    throw new CheckpointException(path, t.Name, $"data_offsets [{t.Begin}, {t.End}) overlap tensor '{previous.Name}' [{previous.Begin}, {previous.End}).");
                previous = t;
            }
            return (tensors, metadata);
        }
    }

    private static CheckpointTensor ParseEntry(string path, string name, JsonElement e, long dataBytes)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new CheckpointException(path, name, $"entry must be an object, got {e.ValueKind}.");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new CheckpointException(path, name, "missing string field 'dtype'.");
        DType dtype = ParseDType(dt.GetString()!) ?? throw new CheckpointException(path, name, $"unsupported dtype '{dt.GetString()}' (expected F32, F16, BF16, F8_E4M3, F8_E8M0, I32, I64 or U8).");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new CheckpointException(path, name, "missing array field 'shape'.");
        var shape = new List<long>();
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw new CheckpointException(path, name, $"shape entries must be integers >= 0, got {d.GetRawText()}.");
            shape.Add(v);
        }
        if (shape.Count > TensorView.MaxRank) throw new CheckpointException(path, name, $"rank {shape.Count} exceeds the supported {TensorView.MaxRank}.");
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new CheckpointException(path, name, "missing field 'data_offsets' of two integers.");
        long begin = off[0].ValueKind == JsonValueKind.Number && off[0].TryGetInt64(out long b) ? b : -1;
        long end = off[1].ValueKind == JsonValueKind.Number && off[1].TryGetInt64(out long en) ? en : -1;
        if (begin < 0 || end < begin)
            throw new CheckpointException(path, name, $"data_offsets [{off[0].GetRawText()}, {off[1].GetRawText()}] must be integers with 0 <= begin <= end.");
        if (end > dataBytes)
            throw new CheckpointException(path, name, $"data_offsets end {end} is past the end of the data section ({dataBytes} bytes; truncated file?).");
        long count = 1;
        try
        {
            foreach (long d in shape) count = checked(count * d);
            long expected = checked(count * dtype.SizeInBytes());
            if (expected != end - begin)
                throw new CheckpointException(path, name, $"shape [{string.Join(", ", shape)}] of {dtype.SafetensorsName()} needs {expected} bytes but data_offsets span {end - begin}.");
        }
        catch (OverflowException)
        {
            throw new CheckpointException(path, name, $"shape [{string.Join(", ", shape)}] is too large.");
        }
        return new CheckpointTensor(name, dtype, shape.ToArray(), begin, end, path);
    }

    /// <summary>Maps a safetensors dtype name to <see cref="DType"/>; null when unsupported.</summary>
    public static DType? ParseDType(string name) => name switch
    {
        "F32" => DType.Float32,
        "F16" => DType.Float16,
        "BF16" => DType.BFloat16,
        "F8_E4M3" => DType.Float8E4M3,
        "F8_E8M0" => DType.UE8M0,
        "I32" => DType.Int32,
        "I64" => DType.Int64,
        "U8" => DType.UInt8,
        _ => null,
    };

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}
