using DeepKernels.Tensors;

namespace DeepKernels.Cuda.Kernels;

/// <summary>What a kernel argument is, for checking it against the kernel's signature.</summary>
public enum KernelArgKind : byte
{
    /// <summary>A device pointer (8 bytes).</summary>
    Pointer,
    /// <summary>An integer (4 or 8 bytes).</summary>
    Integer,
    /// <summary>A float or double.</summary>
    Float,
    /// <summary>A struct passed by value (raw bytes).</summary>
    Bytes,
}

/// <summary>
/// One kernel argument passed by value, as cuLaunchKernel expects it: scalars and pointers of up
/// to 8 bytes are stored inline; larger structs (e.g. a TMA descriptor) as a byte array.
/// </summary>
public readonly struct KernelArg
{
    private KernelArg(KernelArgKind kind, int size, ulong value, byte[]? bytes = null)
    {
        Kind = kind;
        Size = size;
        Value = value;
        Bytes = bytes;
    }

    /// <summary>The kind of value.</summary>
    public KernelArgKind Kind { get; }

    /// <summary>Size in bytes.</summary>
    public int Size { get; }

    /// <summary>The inline value bits (little endian; meaningless for <see cref="KernelArgKind.Bytes"/>).</summary>
    public ulong Value { get; }

    /// <summary>The struct bytes for <see cref="KernelArgKind.Bytes"/>.</summary>
    internal byte[]? Bytes { get; }

    /// <summary>A device address.</summary>
    public static KernelArg Pointer(nint address) => new(KernelArgKind.Pointer, 8, (ulong)address);

    /// <summary>A device address.</summary>
    public static KernelArg Pointer(ulong address) => new(KernelArgKind.Pointer, 8, address);

    /// <summary>The address of a device tensor; a host tensor is an <see cref="ArgumentException"/> (kernels cannot read it).</summary>
    public static KernelArg Pointer(TensorView tensor) => tensor.Location == MemoryLocation.Device
        ? new(KernelArgKind.Pointer, 8, (ulong)tensor.Data)
        : throw new ArgumentException($"Expected a device tensor as a kernel argument, got {tensor}.", nameof(tensor));

    /// <summary>A 32-bit int.</summary>
    public static KernelArg Int32(int value) => new(KernelArgKind.Integer, 4, (uint)value);

    /// <summary>A 32-bit unsigned int.</summary>
    public static KernelArg UInt32(uint value) => new(KernelArgKind.Integer, 4, value);

    /// <summary>A 64-bit int.</summary>
    public static KernelArg Int64(long value) => new(KernelArgKind.Integer, 8, (ulong)value);

    /// <summary>A 32-bit float.</summary>
    public static KernelArg Float32(float value) => new(KernelArgKind.Float, 4, BitConverter.SingleToUInt32Bits(value));

    /// <summary>A struct passed by value.</summary>
    public static KernelArg Struct(ReadOnlySpan<byte> bytes) => new(KernelArgKind.Bytes, bytes.Length, 0, bytes.ToArray());

    /// <summary>A 32-bit int.</summary>
    public static implicit operator KernelArg(int value) => Int32(value);

    /// <summary>A 32-bit float.</summary>
    public static implicit operator KernelArg(float value) => Float32(value);

    /// <summary>The address of a device tensor.</summary>
    public static implicit operator KernelArg(TensorView tensor) => Pointer(tensor);

    /// <inheritdoc />
    public override string ToString() => Kind switch
    {
        KernelArgKind.Pointer => $"pointer 0x{Value:x}",
        KernelArgKind.Bytes => $"struct of {Size} bytes",
        _ => $"{Kind.ToString().ToLowerInvariant()} of {Size} bytes",
    };
}
