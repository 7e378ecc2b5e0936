using DeepKernels.Tensors;

namespace DeepKernels.Model.Safetensors;

/// <summary>
/// One tensor of an open <see cref="SafetensorsFile"/>: name, dtype, shape and its bytes in the
/// memory-mapped file (valid until the file is disposed). Data is little endian, row-major.
/// </summary>
public sealed class SafetensorsTensor
{
    private readonly SafetensorsFile _file;

    internal SafetensorsTensor(SafetensorsFile file, string name, DType dtype, long[] shape, long begin, long end)
    {
        _file = file;
        Name = name;
        DType = dtype;
        ShapeArray = shape;
        DataBegin = begin;
        DataEnd = end;
    }

    /// <summary>The tensor's name in the header.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    internal long[] ShapeArray { get; }

    /// <summary>The shape (empty for a scalar).</summary>
    public IReadOnlyList<long> Shape => ShapeArray;

    /// <summary>Offset of the first byte, relative to the start of the data section.</summary>
    public long DataBegin { get; }

    /// <summary>Offset one past the last byte, relative to the start of the data section.</summary>
    public long DataEnd { get; }

    /// <summary>Bytes of data.</summary>
    public long ByteLength => DataEnd - DataBegin;

    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in ShapeArray) n *= d;
            return n;
        }
    }

    /// <summary>The file that holds the tensor.</summary>
    public SafetensorsFile File => _file;

    /// <summary>Address of the first byte in the mapped file.</summary>
    public nint Address => _file.AddressOf(this);

    /// <summary>The bytes; tensors of 2 GiB or more must be read through <see cref="Address"/>.</summary>
    public unsafe ReadOnlySpan<byte> Data
    {
        get
        {
            if (ByteLength > int.MaxValue)
                throw new NotSupportedException($"Tensor '{Name}' has {ByteLength} bytes, too many for a span; use {nameof(Address)}.");
            return new ReadOnlySpan<byte>((void*)Address, (int)ByteLength);
        }
    }

    /// <summary>
    /// A host <see cref="TensorView"/> of the mapped bytes (read-only by contract: do not write
    /// through it). Scalars become shape [1]; ranks above <see cref="TensorView.MaxRank"/> are refused.
    /// </summary>
    public TensorView AsView()
    {
        if (ShapeArray.Length > TensorView.MaxRank)
            throw new NotSupportedException($"Tensor '{Name}' has rank {ShapeArray.Length}; views support up to {TensorView.MaxRank}.");
        return ShapeArray.Length == 0
            ? new TensorView(Address, DType, MemoryLocation.Host, 1)
            : new TensorView(Address, DType, MemoryLocation.Host, ShapeArray);
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name}: {DType.SafetensorsName()}[{string.Join(", ", ShapeArray)}]";
}
