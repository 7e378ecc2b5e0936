namespace DeepKernels.Tensors;

/// <summary>Element types that tensors and kernels use.</summary>
public enum DType : byte
{
    /// <summary>IEEE binary32.</summary>
    Float32,
    /// <summary>IEEE binary16.</summary>
    Float16,
    /// <summary>bfloat16.</summary>
    BFloat16,
    /// <summary>OCP FP8 E4M3FN.</summary>
    Float8E4M3,
    /// <summary>UE8M0 scale byte, 2^(e-127).</summary>
    UE8M0,
    /// <summary>Signed 32-bit integer.</summary>
    Int32,
    /// <summary>Signed 64-bit integer.</summary>
    Int64,
    /// <summary>Unsigned byte (raw storage).</summary>
    UInt8,
}

/// <summary>Sizes and names of <see cref="DType"/> values.</summary>
public static class DTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.Float32 or DType.Int32 => 4,
        DType.Float16 or DType.BFloat16 => 2,
        DType.Float8E4M3 or DType.UE8M0 or DType.UInt8 => 1,
        DType.Int64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype."),
    };

    /// <summary>The safetensors spelling of the dtype (F32, BF16, F8_E4M3, ...).</summary>
    public static string SafetensorsName(this DType dtype) => dtype switch
    {
        DType.Float32 => "F32",
        DType.Float16 => "F16",
        DType.BFloat16 => "BF16",
        DType.Float8E4M3 => "F8_E4M3",
        DType.UE8M0 => "F8_E8M0",
        DType.Int32 => "I32",
        DType.Int64 => "I64",
        DType.UInt8 => "U8",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype."),
    };
}
