using DeepKernels.Tensors;

namespace DeepKernels.Model.Checkpoint;

/// <summary>One tensor's entry in a safetensors header: dtype, shape and byte range within the data section.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions (may be empty for a scalar).</param>
/// <param name="Begin">First byte, relative to the start of the data section.</param>
/// <param name="End">One past the last byte.</param>
/// <param name="File">The file holding it.</param>
public sealed record CheckpointTensor(string Name, DType DType, long[] Shape, long Begin, long End, string File)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>Bytes of data.</summary>
    public long ByteCount => End - Begin;

    /// <summary>"F8_E4M3[576, 512]".</summary>
    public string Describe() => $"{DType.SafetensorsName()}[{string.Join(", ", Shape)}]";
}
