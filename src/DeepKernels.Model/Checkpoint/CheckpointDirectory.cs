using DeepKernels.Model.Safetensors;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Checkpoint;

/// <summary>
/// Typed access to the tensors of a checkpoint directory for the model loader. Files are read by
/// <see cref="SafetensorsCheckpoint"/> (one file, a directory of files, or shards listed by
/// <c>model.safetensors.index.json</c>), whose malformed-file errors are
/// <see cref="SafetensorsFormatException"/>s; lookups here add the model's expectations (presence,
/// dtype, shape) and report violations as <see cref="CheckpointException"/>s naming file and tensor.
/// </summary>
public sealed class CheckpointDirectory : IDisposable
{
    private readonly SafetensorsCheckpoint _checkpoint;

    private CheckpointDirectory(string path, SafetensorsCheckpoint checkpoint)
    {
        Path = path;
        _checkpoint = checkpoint;
    }

    /// <summary>The directory.</summary>
    public string Path { get; }

    /// <summary>Every tensor name.</summary>
    public IEnumerable<string> Names => _checkpoint.TensorNames;

    /// <summary>Opens the checkpoint files of <paramref name="directory"/>.</summary>
    public static CheckpointDirectory Open(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Checkpoint directory not found: {directory}");
        return new CheckpointDirectory(directory, SafetensorsCheckpoint.Open(directory));
    }

    /// <summary>Whether a tensor exists.</summary>
    public bool Contains(string name) => _checkpoint.Contains(name);

    /// <summary>A tensor; throws naming the directory and tensor when missing.</summary>
    public SafetensorsTensor Get(string name) =>
        _checkpoint.TryGetTensor(name, out var t) ? t : throw new CheckpointException(Path, name, "missing from the checkpoint.");

    /// <summary>A tensor checked against the expected dtypes and shape.</summary>
    public SafetensorsTensor Get(string name, ReadOnlySpan<DType> dtypes, params ReadOnlySpan<long> shape)
    {
        var t = Get(name);
        string actual = $"{t.DType.SafetensorsName()}[{string.Join(", ", t.Shape)}]";
        if (!dtypes.Contains(t.DType))
            throw new CheckpointException(t.File.Path, name, $"expected dtype {string.Join(" or ", dtypes.ToArray().Select(d => d.SafetensorsName()))}, got {actual}.");
        if (!t.Shape.SequenceEqual(shape.ToArray()))
            throw new CheckpointException(t.File.Path, name, $"expected shape [{string.Join(", ", shape.ToArray())}], got {actual}.");
        return t;
    }

    /// <summary>The bytes of a tensor (memory-mapped; valid until disposal).</summary>
    public static ReadOnlySpan<byte> Bytes(SafetensorsTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return tensor.Data;
    }

    /// <summary>Unmaps every file.</summary>
    public void Dispose() => _checkpoint.Dispose();
}
