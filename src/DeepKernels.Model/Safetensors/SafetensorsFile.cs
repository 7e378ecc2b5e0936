using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Safetensors;

/// <summary>
/// A read-only, memory-mapped safetensors file: an 8-byte little-endian header length, a UTF-8
/// JSON header (tensor name -> dtype, shape, data_offsets; optional <c>__metadata__</c> of
/// string pairs), then the raw data. <see cref="Open"/> validates everything up front (header
/// length within the file, strict UTF-8, known dtypes, offsets in range, not overlapping, and
/// matching shape times element size) and throws <see cref="SafetensorsFormatException"/>
/// naming the file and tensor. Tensor bytes stay valid until <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (as the reference implementation), 100 MB.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly Dictionary<string, SafetensorsTensor> _byName;
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;

    private SafetensorsFile(string path, long dataStart, long fileLength, List<SafetensorsTensor> tensors,
        Dictionary<string, SafetensorsTensor> byName, IReadOnlyDictionary<string, string> metadata, MemoryMappedFile? map, MemoryMappedViewAccessor? view)
    {
        Path = path;
        DataStart = dataStart;
        FileLength = fileLength;
        Tensors = tensors;
        _byName = byName;
        Metadata = metadata;
        _map = map;
        _view = view;
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>Byte offset of the data section (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>File size in bytes.</summary>
    public long FileLength { get; }

    /// <summary>Tensors in header order.</summary>
    public IReadOnlyList<SafetensorsTensor> Tensors { get; }

    /// <summary>The <c>__metadata__</c> entries (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Whether a tensor of that name exists.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The tensor of that name; <see cref="KeyNotFoundException"/> naming the file otherwise.</summary>
    public SafetensorsTensor this[string name] =>
        _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'.");

    /// <summary>Looks a tensor up by name.</summary>
    public bool TryGetTensor(string name, out SafetensorsTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <summary>Opens, validates and maps a safetensors file.</summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = System.IO.Path.GetFullPath(path);
        long fileLength, headerLength;
        byte[] header;
        using (var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            fileLength = stream.Length;
            if (fileLength < 8) throw new SafetensorsFormatException(full, null, $"file has {fileLength} bytes, fewer than the 8-byte header length.");
            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            headerLength = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > MaxHeaderBytes || headerLength < 0)
                throw new SafetensorsFormatException(full, null, $"header length {(ulong)headerLength} exceeds the limit of {MaxHeaderBytes} bytes.");
            if (8 + headerLength > fileLength)
                throw new SafetensorsFormatException(full, null, $"header length {headerLength} runs past the end of the file ({fileLength} bytes).");
            if (headerLength < 2) throw new SafetensorsFormatException(full, null, $"header length {headerLength} is too small for a JSON object.");
            header = new byte[headerLength];
            stream.ReadExactly(header);
        }
        long dataStart = 8 + headerLength, dataLength = fileLength - dataStart;
        var (entries, metadata) = ParseHeader(full, header, dataLength);

        var tensors = new List<SafetensorsTensor>(entries.Count);
        var byName = new Dictionary<string, SafetensorsTensor>(StringComparer.Ordinal);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        if (dataLength > 0)
        {
            map = MemoryMappedFile.CreateFromFile(full, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
        }
        var file = new SafetensorsFile(full, dataStart, fileLength, tensors, byName, metadata, map, view);
        if (view is not null)
        {
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            file._base = p + view.PointerOffset;
        }
        foreach (var e in entries)
        {
            var t = new SafetensorsTensor(file, e.Name, e.DType, e.Shape, e.Begin, e.End);
            tensors.Add(t);
            byName.Add(e.Name, t);
        }
        return file;
    }

    private readonly record struct Entry(string Name, DType DType, long[] Shape, long Begin, long End);

    private static (List<Entry>, IReadOnlyDictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        string json;
        try
        {
            json = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header);
        }
        catch (DecoderFallbackException e)
        {
            throw new SafetensorsFormatException(path, null, "header is not valid UTF-8.", e);
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, null, $"header is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(path, null, $"header must be a JSON object, got {doc.RootElement.ValueKind}.");
            var entries = new List<Entry>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                string name = property.Name;
                if (!names.Add(name)) throw new SafetensorsFormatException(path, name, "appears twice in the header.");
                if (name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw new SafetensorsFormatException(path, null, "__metadata__ must be an object of strings.");
                    foreach (var m in property.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new SafetensorsFormatException(path, null, $"__metadata__ value of '{m.Name}' must be a string, got {m.Value.ValueKind}.");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                entries.Add(ParseEntry(path, name, property.Value, dataLength));
            }
            // Offsets must not overlap (holes are tolerated).
            var sorted = entries.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ToList();
            for (int i = 1; i < sorted.Count; i++)
            {
                if (sorted[i].Begin < sorted[i - 1].End)
                    throw new SafetensorsFormatException(path, sorted[i].Name,
                        $"data_offsets [{sorted[i].Begin}, {sorted[i].End}] overlap tensor '{sorted[i - 1].Name}' [{sorted[i - 1].Begin}, {sorted[i - 1].End}].");
            }
            return (entries, metadata);
        }
    }

    private static Entry ParseEntry(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, name, $"entry must be an object, got {value.ValueKind}.");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new SafetensorsFormatException(path, name, "missing string 'dtype'.");
        string dtypeName = dtypeElement.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtypeName, out var dtype))
            throw new SafetensorsFormatException(path, name, $"unknown dtype '{dtypeName}' (supported: F32, F16, BF16, F8_E4M3, F8_E8M0, I32, I64, U8).");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new SafetensorsFormatException(path, name, "missing array 'shape'.");
        var shape = new long[shapeElement.GetArrayLength()];
        long count = 1;
        int i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new SafetensorsFormatException(path, name, $"shape entries must be integers >= 0, got {d}.");
            shape[i++] = dim;
            try { count = checked(count * dim); }
            catch (OverflowException) { throw new SafetensorsFormatException(path, name, "shape has too many elements."); }
        }
        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw new SafetensorsFormatException(path, name, "missing 'data_offsets' [begin, end].");
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new SafetensorsFormatException(path, name, $"data_offsets {offsets} must be integers with 0 <= begin <= end.");
        if (end > dataLength)
            throw new SafetensorsFormatException(path, name, $"data_offsets [{begin}, {end}] run past the data section ({dataLength} bytes).");
        long expected;
        try { expected = checked(count * dtype.SizeInBytes()); }
        catch (OverflowException) { throw new SafetensorsFormatException(path, name, "shape has too many bytes."); }
        if (end - begin != expected)
            throw new SafetensorsFormatException(path, name,
                $"shape [{string.Join(", ", shape)}] of {dtypeName} needs {expected} bytes but data_offsets [{begin}, {end}] hold {end - begin}.");
        return new Entry(name, dtype, shape, begin, end);
    }

    internal nint AddressOf(SafetensorsTensor tensor)
    {
        ObjectDisposedException.ThrowIf(_view is not null && _base == null, this);
        if (tensor.ByteLength == 0) return _base == null ? 0 : (nint)(_base + DataStart);
        return (nint)(_base + DataStart + tensor.DataBegin);
    }

    /// <summary>Unmaps the file; spans and addresses of its tensors become invalid.</summary>
    public void Dispose()
    {
        if (_view is not null && _base != null)
        {
            _base = null;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
        _view?.Dispose();
        _map?.Dispose();
    }
}
