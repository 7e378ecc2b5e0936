namespace DeepKernels.Memory.KvCache;

/// <summary>How one token's 576-value MLA latent (512 compressed KV + 64 RoPE key) is stored in a cache page.</summary>
public enum LatentCacheLayout : byte
{
    /// <summary>576 BF16 values per token: [c_kv (512) | k_pe (64)], 1152 bytes.</summary>
    BFloat16,

    /// <summary>
    /// 656 bytes per token: [512 B E4M3 c_kv | 16 B = 4 FP32 scales, one per 128 values | 128 B = 64 BF16 k_pe].
    /// See <see cref="LatentCacheFormat"/>.
    /// </summary>
    Fp8,
}

/// <summary>
/// Sizes and byte layout of the paged latent cache. A cache is a backend tensor of shape
/// [num_pages, page_size, 576] BFloat16 or [num_pages, page_size, 656] UInt8; token t of page p
/// starts at byte (p * page_size + t) * <see cref="BytesPerToken"/>.
/// <para>FP8 token record (656 bytes, little-endian, 16-byte aligned size):</para>
/// <list type="table">
/// <item><term>bytes [0, 512)</term><description>c_kv as E4M3FN, value i scaled by scale[i / 128]</description></item>
/// <item><term>bytes [512, 528)</term><description>4 FP32 scales; scale = max(amax, 1e-4) / 448 of its 128-value group</description></item>
/// <item><term>bytes [528, 656)</term><description>k_pe as 64 BF16 values (RoPE dims are not quantized)</description></item>
/// </list>
/// Dequantized c_kv[i] = e4m3[i] * scale[i / 128].
/// </summary>
public static class LatentCacheFormat
{
    /// <summary>Compressed KV width (kv_lora_rank); also the value (V) width.</summary>
    public const int LatentDim = 512;

    /// <summary>Decoupled RoPE key width.</summary>
    public const int RopeDim = 64;

    /// <summary>Key width: <see cref="LatentDim"/> + <see cref="RopeDim"/>.</summary>
    public const int HeadDim = LatentDim + RopeDim;

    /// <summary>Values per FP8 scale group.</summary>
    public const int Fp8GroupSize = 128;

    /// <summary>FP8 scale groups per token.</summary>
    public const int Fp8Groups = LatentDim / Fp8GroupSize;

    /// <summary>Byte offset of the FP32 scales in an FP8 token record.</summary>
    public const int Fp8ScalesOffset = LatentDim;

    /// <summary>Byte offset of the BF16 RoPE values in an FP8 token record.</summary>
    public const int Fp8RopeOffset = Fp8ScalesOffset + Fp8Groups * sizeof(float);

    /// <summary>Bytes per token in the FP8 layout (656).</summary>
    public const int Fp8BytesPerToken = Fp8RopeOffset + RopeDim * 2;

    /// <summary>Bytes per token in the BF16 layout (1152).</summary>
    public const int BFloat16BytesPerToken = HeadDim * 2;

    /// <summary>Smallest supported page size.</summary>
    public const int MinPageSize = 16;

    /// <summary>Largest supported page size.</summary>
    public const int MaxPageSize = 256;

    /// <summary>Default page size (FlashMLA's).</summary>
    public const int DefaultPageSize = 64;

    /// <summary>Bytes one token occupies in a page of the given layout.</summary>
    public static int BytesPerToken(LatentCacheLayout layout) => layout switch
    {
        LatentCacheLayout.BFloat16 => BFloat16BytesPerToken,
        LatentCacheLayout.Fp8 => Fp8BytesPerToken,
        _ => throw new ArgumentOutOfRangeException(nameof(layout), layout, "Unknown latent cache layout."),
    };

    /// <summary>Whether <paramref name="pageSize"/> is a power of two in [16, 256].</summary>
    public static bool IsValidPageSize(int pageSize) =>
        pageSize is >= MinPageSize and <= MaxPageSize && (pageSize & (pageSize - 1)) == 0;

    /// <summary>Throws <see cref="ArgumentException"/> unless the page size is a power of two in [16, 256].</summary>
    public static void ValidatePageSize(int pageSize, string name)
    {
        if (!IsValidPageSize(pageSize))
            throw new ArgumentException($"Expected {name} to be a power of two in [{MinPageSize}, {MaxPageSize}], got {pageSize}.", name);
    }
}
