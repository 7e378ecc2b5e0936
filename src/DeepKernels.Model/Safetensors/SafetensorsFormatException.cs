namespace DeepKernels.Model.Safetensors;

/// <summary>
/// A safetensors file (or a sharded checkpoint's index) is malformed: the message names the
/// file, the tensor when one is involved, and what is wrong.
/// </summary>
public sealed class SafetensorsFormatException : IOException
{
    /// <summary>Creates the exception; the message is prefixed with the file and tensor.</summary>
    public SafetensorsFormatException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Format(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>The file that is malformed.</summary>
    public string FilePath { get; }

    /// <summary>The tensor the problem concerns, if any.</summary>
    public string? TensorName { get; }

    private static string Format(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}
