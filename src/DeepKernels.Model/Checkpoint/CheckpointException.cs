namespace DeepKernels.Model.Checkpoint;

/// <summary>
/// A checkpoint that cannot be loaded: a malformed or truncated safetensors file, or a tensor that
/// is missing or has the wrong dtype or shape. The message names the file and, where one is
/// involved, the tensor. This (and <see cref="FileNotFoundException"/> for absent files) is the
/// only exception the loader lets out for bad checkpoint contents.
/// </summary>
public sealed class CheckpointException : IOException
{
    /// <summary>Creates the exception.</summary>
    public CheckpointException(string file, string? tensor, string message, Exception? inner = null)
        : base(tensor is null ? $"{file}: {message}" : $"{file}: tensor '{tensor}': {message}", inner)
    {
        File = file;
        Tensor = tensor;
    }

    /// <summary>The file at fault.</summary>
    public string File { get; }

    /// <summary>The tensor at fault, or null for file-level problems.</summary>
    public string? Tensor { get; }
}
