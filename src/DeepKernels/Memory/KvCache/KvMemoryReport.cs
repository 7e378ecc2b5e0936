namespace DeepKernels.Memory.KvCache;

/// <summary>
/// KV cache sizes of MLA next to plain multi-head attention with the same heads, per token per
/// layer and for a whole context. Formulas (bytes):
/// <list type="bullet">
/// <item>MLA BF16: (kv_lora_rank + qk_rope_dim) * 2 = (512 + 64) * 2 = 1152.</item>
/// <item>MLA FP8: kv_lora_rank (E4M3) + 4 * kv_lora_rank / 128 (FP32 scales) + 2 * qk_rope_dim (BF16) = 512 + 16 + 128 = 656.</item>
/// <item>MHA BF16 (K and V cached per head, head dim 128 as in DESIGN.md): 2 * h * 128 * 2 = 65536 for h = 128.</item>
/// <item>MHA BF16 with DeepSeek's real head dims (K = nope + rope = 192, V = 128): h * (192 + 128) * 2 = 81920 for h = 128.</item>
/// </list>
/// Totals multiply by layers and tokens (context length x batch).
/// </summary>
public sealed record KvMemoryReport(int Heads, int Layers, int KvLoraRank = 512, int QkNopeHeadDim = 128, int QkRopeHeadDim = 64, int VHeadDim = 128)
{
    /// <summary>DeepSeek-V3: 128 heads, 61 layers.</summary>
    public static KvMemoryReport DeepSeekV3 { get; } = new(128, 61);

    /// <summary>MLA with BF16 pages: bytes per token per layer (1152 for V3).</summary>
    public long MlaBf16BytesPerToken => (KvLoraRank + QkRopeHeadDim) * 2L;

    /// <summary>MLA with FP8 pages: bytes per token per layer (656 for V3).</summary>
    public long MlaFp8BytesPerToken => KvLoraRank + KvLoraRank / LatentCacheFormat.Fp8GroupSize * 4L + QkRopeHeadDim * 2L;

    /// <summary>MHA with the same heads, K and V of 128 values each, BF16: 2 * h * 128 * 2 bytes (65536 for V3).</summary>
    public long MhaBf16BytesPerToken => 2L * Heads * VHeadDim * 2;

    /// <summary>MHA with DeepSeek's decoupled dims (K 192, V 128 per head), BF16: h * (192 + 128) * 2 bytes (81920 for V3).</summary>
    public long MhaFullDimsBf16BytesPerToken => (long)Heads * (QkNopeHeadDim + QkRopeHeadDim + VHeadDim) * 2;

    /// <summary>Bytes for <paramref name="tokens"/> tokens over all layers at <paramref name="bytesPerTokenPerLayer"/>.</summary>
    public long Total(long bytesPerTokenPerLayer, long tokens) => checked(bytesPerTokenPerLayer * Layers * tokens);

    /// <summary>A few lines of text for <c>deepkernels info --kv</c>: per token per layer, and totals for <paramref name="tokens"/> tokens.</summary>
    public string Format(long tokens)
    {
        static string Size(double bytes) => bytes switch
        {
            >= 1L << 30 => $"{bytes / (1L << 30):F2} GiB",
            >= 1L << 20 => $"{bytes / (1L << 20):F2} MiB",
            >= 1L << 10 => $"{bytes / (1L << 10):F2} KiB",
            _ => $"{bytes:F0} B",
        };
        var rows = new (string Name, long PerToken)[]
        {
            ("MLA latent, BF16 pages", MlaBf16BytesPerToken),
            ("MLA latent, FP8 pages", MlaFp8BytesPerToken),
            ($"MHA {Heads} heads K+V 128, BF16", MhaBf16BytesPerToken),
            ($"MHA {Heads} heads K 192 + V 128, BF16", MhaFullDimsBf16BytesPerToken),
        };
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"KV cache, {Layers} layers, {tokens} tokens:");
        sb.AppendLine($"  {"layout",-36} {"B/token/layer",14} {"B/token",12} {"total",12} {"vs MLA BF16",12}");
        foreach (var (name, per) in rows)
            sb.AppendLine($"  {name,-36} {per,14} {per * Layers,12} {Size(Total(per, tokens)),12} {(double)per / MlaBf16BytesPerToken,11:F2}x");
        return sb.ToString();
    }
}
