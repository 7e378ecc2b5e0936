using System.Runtime.CompilerServices;
using System.Text;

namespace DeepKernels.Tensors;

/// <summary>
/// A non-owning view of a tensor: address, element type, shape and strides (in elements),
/// and whether the address is host or device memory. Rank is at most <see cref="MaxRank"/>;
/// the view is a value type and never allocates, so ops can take it on hot paths.
/// </summary>
public readonly struct TensorView
{
    /// <summary>The largest rank a view can have.</summary>
    public const int MaxRank = 4;

    [InlineArray(MaxRank)]
    private struct Dims
    {
        private long _element0;
    }

    private readonly Dims _shape;
    private readonly Dims _strides;

    /// <summary>Address of element [0, 0, ...].</summary>
    public nint Data { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>Host or device memory.</summary>
    public MemoryLocation Location { get; }

    /// <summary>Number of dimensions.</summary>
    public int Rank { get; }

    /// <summary>A contiguous row-major view.</summary>
    public TensorView(nint data, DType dtype, MemoryLocation location, params ReadOnlySpan<long> shape)
        : this(data, dtype, location, shape, default)
    {
    }

    /// <summary>A strided view; empty <paramref name="strides"/> means contiguous row-major.</summary>
    public TensorView(nint data, DType dtype, MemoryLocation location, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides)
    {
        if (shape.Length is 0 or > MaxRank)
            throw new ArgumentOutOfRangeException(nameof(shape), shape.Length, $"Expected rank 1..{MaxRank}, got {shape.Length}.");
        if (!strides.IsEmpty && strides.Length != shape.Length)
            throw new ArgumentException($"Expected {shape.Length} strides to match the shape, got {strides.Length}.", nameof(strides));
        Data = data;
        DType = dtype;
        Location = location;
        Rank = shape.Length;
        long stride = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] < 0)
                throw new ArgumentOutOfRangeException(nameof(shape), shape[i], $"Dimension {i} must be >= 0, got {shape[i]}.");
            _shape[i] = shape[i];
            _strides[i] = strides.IsEmpty ? stride : strides[i];
            stride *= shape[i];
        }
    }

    /// <summary>Size of dimension <paramref name="dim"/>; negative values count from the end.</summary>
    public long Dim(int dim) => _shape[Normalize(dim)];

    /// <summary>Stride in elements of dimension <paramref name="dim"/>; negative values count from the end.</summary>
    public long Stride(int dim) => _strides[Normalize(dim)];

    /// <summary>The shape as a new array (for messages and tests).</summary>
    public long[] Shape => ((ReadOnlySpan<long>)_shape)[..Rank].ToArray();

    /// <summary>Number of elements.</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            for (int i = 0; i < Rank; i++) n *= _shape[i];
            return n;
        }
    }

    /// <summary>Bytes spanned by a contiguous view.</summary>
    public long ByteCount => ElementCount * DType.SizeInBytes();

    /// <summary>Whether the elements are dense and row-major.</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (_shape[i] != 1 && _strides[i] != expected) return false;
                expected *= _shape[i];
            }
            return true;
        }
    }

    /// <summary>The same bytes with another contiguous shape of equal element count.</summary>
    public TensorView Reshape(params ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (long d in shape) count *= d;
        if (!IsContiguous) throw new InvalidOperationException($"Only a contiguous view can be reshaped; this one is {this}.");
        if (count != ElementCount)
            throw new ArgumentException($"Expected a shape with {ElementCount} elements, got {count}.", nameof(shape));
        return new TensorView(Data, DType, Location, shape);
    }

    /// <summary>A view of rows [start, start+length) along dimension 0.</summary>
    public TensorView SliceRows(long start, long length)
    {
        if (start < 0 || length < 0 || start + length > Dim(0))
            throw new ArgumentOutOfRangeException(nameof(start), $"Expected rows [{start}, {start + length}) within [0, {Dim(0)}).");
        Span<long> shape = stackalloc long[Rank];
        Span<long> strides = stackalloc long[Rank];
        for (int i = 0; i < Rank; i++) { shape[i] = _shape[i]; strides[i] = _strides[i]; }
        shape[0] = length;
        return new TensorView(Data + (nint)(start * _strides[0] * DType.SizeInBytes()), DType, Location, shape, strides);
    }

    /// <summary>The elements of a contiguous host view as a span.</summary>
    public unsafe Span<T> AsSpan<T>() where T : unmanaged
    {
        if (Location != MemoryLocation.Host)
            throw new InvalidOperationException($"Only host memory can be read as a span; this view is {Location}.");
        if (!IsContiguous)
            throw new InvalidOperationException($"Only a contiguous view can be read as a span; this one is {this}.");
        if (sizeof(T) != DType.SizeInBytes())
            throw new InvalidOperationException($"Element type {typeof(T).Name} ({sizeof(T)} bytes) does not match {DType} ({DType.SizeInBytes()} bytes).");
        return new Span<T>((void*)Data, checked((int)ElementCount));
    }

    private int Normalize(int dim)
    {
        int d = dim < 0 ? dim + Rank : dim;
        if ((uint)d >= (uint)Rank)
            throw new ArgumentOutOfRangeException(nameof(dim), dim, $"Expected a dimension in [-{Rank}, {Rank}).");
        return d;
    }

    /// <summary>For messages: dtype[shape] @ location.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(DType).Append('[');
        for (int i = 0; i < Rank; i++) sb.Append(i == 0 ? "" : ", ").Append(_shape[i]);
        sb.Append("] ").Append(Location);
        return sb.ToString();
    }
}
