using DeepKernels.Tensors;

namespace DeepKernels.Model.Safetensors;

/// <summary>The safetensors dtype names this reader understands and their <see cref="DType"/>.</summary>
public static class SafetensorsDTypes
{
    /// <summary>Parses F32, F16, BF16, F8_E4M3, I32, I64, U8 or F8_E8M0 (UE8M0 scales).</summary>
    public static bool TryParse(string name, out DType dtype)
    {
        switch (name)
        {
            case "F32": dtype = DType.Float32; return true;
            case "F16": dtype = DType.Float16; return true;
            case "BF16": dtype = DType.BFloat16; return true;
            case "F8_E4M3": dtype = DType.Float8E4M3; return true;
            case "F8_E8M0": dtype = DType.UE8M0; return true;
            case "I32": dtype = DType.Int32; return true;
            case "I64": dtype = DType.Int64; return true;
            case "U8": dtype = DType.UInt8; return true;
            default: dtype = default; return false;
        }
    }
}
