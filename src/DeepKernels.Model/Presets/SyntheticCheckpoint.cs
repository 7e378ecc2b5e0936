using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using DeepKernels.Formats;
using DeepKernels.Model.Config;
using DeepKernels.Model.Safetensors;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Presets;

/// <summary>
/// A fast writer of random FP8 checkpoints at full DeepSeek-V3 widths (benchmarks: a 4-layer V3
/// is about 17 GB), with the same tensor names, dtypes and statistics as <see cref="TinyPreset"/>
/// but a different generator, so the tiny preset's bytes stay as they are:
/// <list type="bullet">
/// <item>every value comes from a counter-based hash of (seed, tensor index, element index), so
/// chunks of a tensor are generated in parallel on every core and the bytes do not depend on
/// the thread count;</item>
/// <item>FP8 codes are drawn from a 256-entry table of E4M3 values spread uniformly over
/// (-448, 448) (never a NaN code), and every 128x128 block gets the same scale, picked so the
/// dequantized weights have standard deviation 1/sqrt(fan_in) as in the tiny preset, which keeps
/// activations O(1) through the layers;</item>
/// <item>tensors are streamed into the safetensors file in 64 MiB windows: memory stays small
/// whatever the model size.</item>
/// </list>
/// The checkpoint (no tokenizer) goes into <c>synth-v3-&lt;hash&gt;</c> under the cache root.
/// </summary>
public static class SyntheticCheckpoint
{
    /// <summary>Bump when the generator changes so cached checkpoints are rebuilt.</summary>
    private const int GeneratorVersion = 1;

    private const int Window = 64 << 20;
    private const int Chunk = 1 << 20;

    // E4M3 codes of 256 values evenly spread over (-448, 448); their RMS sets the block scale.
    private static readonly byte[] CodeTable = BuildCodeTable(out CodeRms);
    private static readonly double CodeRms;

    /// <summary>The directory name for a configuration and seed: synth-v3-&lt;12 hex of SHA-256&gt;.</summary>
    public static string DirectoryName(DeepSeekV3Config config, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        string key = $"{config.ToJson()}|{seed.ToString(CultureInfo.InvariantCulture)}|synthetic-{GeneratorVersion.ToString(CultureInfo.InvariantCulture)}";
        return "synth-v3-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..12];
    }

    /// <summary>Whether the checkpoint of <paramref name="config"/> and <paramref name="seed"/> is already in the cache.</summary>
    public static bool IsCached(DeepSeekV3Config config, ulong seed, string? cacheRoot = null)
    {
        string dir = Path.Combine(cacheRoot ?? TinyPreset.DefaultCacheRoot, DirectoryName(config, seed));
        return File.Exists(Path.Combine(dir, "config.json")) && File.Exists(Path.Combine(dir, "model.safetensors"));
    }

    /// <summary>Bytes of tensor data the checkpoint of <paramref name="config"/> holds.</summary>
    public static long DataBytes(DeepSeekV3Config config) => Plan(config).Sum(t => t.Spec.ByteLength);

    /// <summary>
    /// Returns the checkpoint directory of <paramref name="config"/>, writing it first when absent
    /// (into a temporary directory renamed at the end). <paramref name="progress"/> receives a line
    /// about every 10% of the bytes.
    /// </summary>
    public static string EnsureCheckpoint(out bool created, DeepSeekV3Config config, ulong seed = TinyPreset.DefaultSeed, string? cacheRoot = null, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        string root = cacheRoot ?? TinyPreset.DefaultCacheRoot;
        string dir = Path.Combine(root, DirectoryName(config, seed));
        created = false;
        if (IsCached(config, seed, root)) return dir;
        Directory.CreateDirectory(root);
        created = CheckpointCache.Publish(dir, t => Write(t, config, seed, progress));
        return dir;
    }

    /// <summary>Writes config.json and model.safetensors for <paramref name="config"/> into <paramref name="directory"/>.</summary>
    public static void Write(string directory, DeepSeekV3Config config, ulong seed, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(config);
        var plan = Plan(config);
        long total = plan.Sum(t => t.Spec.ByteLength), done = 0, nextReport = total / 10;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["generator"] = "deepkernels synthetic v" + GeneratorVersion.ToString(CultureInfo.InvariantCulture), ["seed"] = seed.ToString(CultureInfo.InvariantCulture) };
        byte[] buffer = new byte[(int)Math.Min(Window, Math.Max(8, plan.Max(t => t.Spec.ByteLength)))];
        using (var writer = SafetensorsWriter.Create(Path.Combine(directory, "model.safetensors"), plan.Select(t => t.Spec).ToList(), metadata))
        {
            for (int ti = 0; ti < plan.Count; ti++)
            {
                var t = plan[ti];
                ulong key = Mix(seed ^ Mix((ulong)ti + 0x51ED27A3UL));
                long length = t.Spec.ByteLength;
                writer.WriteTensor(t.Spec.Name, sink =>
                {
                    for (long offset = 0; offset < length; offset += buffer.Length)
                    {
                        int n = (int)Math.Min(buffer.Length, length - offset);
                        Fill(t, key, offset, buffer, n);
                        sink.Write(buffer.AsSpan(0, n));
                        done += n;
                        if (progress is not null && done >= nextReport)
                        {
                            progress(string.Create(CultureInfo.InvariantCulture,
                                $"synthetic checkpoint: {done / 1e9:F2} of {total / 1e9:F2} GB written ({clock.Elapsed.TotalSeconds:F1} s)"));
                            nextReport += total / 10;
                        }
                    }
                });
            }
            writer.Complete();
        }
        File.WriteAllText(Path.Combine(directory, "config.json"), config.ToJson());
    }

    private enum Kind { Fp8Codes, Fp8Scales, Bf16, F32 }

    private sealed record Planned(SafetensorsTensorSpec Spec, Kind Kind, double Std, double Center, float Scale);

    // Tensor names, shapes and statistics, in the tiny preset's order.
    private static List<Planned> Plan(DeepSeekV3Config config)
    {
        var plan = new List<Planned>();
        int h = config.HiddenSize, heads = config.NumAttentionHeads;
        void Bf16(string name, double std, double center, params long[] shape) => plan.Add(new(new(name, DType.BFloat16, shape), Kind.Bf16, std, center, 0));
        void Fp8(string name, int rows, int cols)
        {
            float scale = (float)(1 / Math.Sqrt(cols) / CodeRms);
            plan.Add(new(new(name, DType.Float8E4M3, [rows, cols]), Kind.Fp8Codes, 0, 0, 0));
            plan.Add(new(new(name + "_scale_inv", DType.Float32, [WeightQuantization.BlockCount(rows), WeightQuantization.BlockCount(cols)]), Kind.Fp8Scales, 0, 0, scale));
        }
        void Mlp(string prefix, int inter)
        {
            Fp8(prefix + "gate_proj.weight", inter, h);
            Fp8(prefix + "up_proj.weight", inter, h);
            Fp8(prefix + "down_proj.weight", h, inter);
        }
        Bf16("model.embed_tokens.weight", 1.0, 0, config.VocabSize, h);
        for (int i = 0; i < config.NumHiddenLayers + config.NumNextnPredictLayers; i++)
        {
            string p = $"model.layers.{i}.";
            if (i >= config.NumHiddenLayers)
            {
                Bf16(p + "enorm.weight", 0.1, 1, h);
                Bf16(p + "hnorm.weight", 0.1, 1, h);
                Fp8(p + "eh_proj.weight", h, 2 * h);
                continue;
            }
            Bf16(p + "input_layernorm.weight", 0.1, 1, h);
            Bf16(p + "post_attention_layernorm.weight", 0.1, 1, h);
            string a = p + "self_attn.";
            if (config.QLoraRank is { } ql)
            {
                Fp8(a + "q_a_proj.weight", ql, h);
                Bf16(a + "q_a_layernorm.weight", 0.1, 1, ql);
                Fp8(a + "q_b_proj.weight", heads * config.QkHeadDim, ql);
            }
            else Fp8(a + "q_proj.weight", heads * config.QkHeadDim, h);
            Fp8(a + "kv_a_proj_with_mqa.weight", config.KvLoraRank + config.QkRopeHeadDim, h);
            Bf16(a + "kv_a_layernorm.weight", 0.1, 1, config.KvLoraRank);
            Fp8(a + "kv_b_proj.weight", heads * (config.QkNopeHeadDim + config.VHeadDim), config.KvLoraRank);
            Fp8(a + "o_proj.weight", h, heads * config.VHeadDim);
            if (config.IsMoeLayer(i))
            {
                Bf16(p + "mlp.gate.weight", 1 / Math.Sqrt(h), 0, config.NRoutedExperts, h);
                plan.Add(new(new(p + "mlp.gate.e_score_correction_bias", DType.Float32, [config.NRoutedExperts]), Kind.F32, 0.1 / Math.Sqrt(3), 0, 0));
                for (int e = 0; e < config.NRoutedExperts; e++) Mlp($"{p}mlp.experts.{e}.", config.MoeIntermediateSize);
                if (config.NSharedExperts > 0) Mlp(p + "mlp.shared_experts.", config.MoeIntermediateSize * config.NSharedExperts);
            }
            else Mlp(p + "mlp.", config.IntermediateSize);
        }
        Bf16("model.norm.weight", 0.1, 1, h);
        if (!config.TieWordEmbeddings) Bf16("lm_head.weight", 1 / Math.Sqrt(h), 0, config.VocabSize, h);
        return plan;
    }

    // Fills buffer[0, n) = bytes [offset, offset + n) of tensor t, in parallel 1 MiB chunks.
    private static void Fill(Planned t, ulong key, long offset, byte[] buffer, int n)
    {
        if (t.Kind == Kind.Fp8Scales)
        {
            MemoryMarshal.Cast<byte, float>(buffer.AsSpan(0, n)).Fill(t.Scale);
            return;
        }
        int chunks = (n + Chunk - 1) / Chunk;
        Parallel.For(0, chunks, c =>
        {
            int start = c * Chunk;
            FillChunk(t, key, offset + start, buffer.AsSpan(start, Math.Min(Chunk, n - start)));
        });
    }

    private static void FillChunk(Planned t, ulong key, long byteOffset, Span<byte> span)
    {
        switch (t.Kind)
        {
            case Kind.Fp8Codes:
            {
                // 8 codes per hash; offsets are multiples of 1 MiB, so the 8-byte groups line up.
                var table = CodeTable;
                ulong counter = (ulong)byteOffset / 8;
                int i = 0;
                for (; i + 8 <= span.Length; i += 8, counter++)
                {
                    ulong r = Mix(key + counter * 0x9E3779B97F4A7C15UL);
                    ulong codes = 0;
                    for (int b = 0; b < 8; b++) codes |= (ulong)table[(byte)(r >> (8 * b))] << (8 * b);
                    BinaryPrimitives.WriteUInt64LittleEndian(span[i..], codes);
                }
                if (i < span.Length)
                {
                    ulong r = Mix(key + counter * 0x9E3779B97F4A7C15UL);
                    for (int b = 0; i < span.Length; i++, b++) span[i] = table[(byte)(r >> (8 * b))];
                }
                break;
            }
            case Kind.Bf16:
            {
                // 4 values per hash, 16 random bits each (plenty for BF16's 8-bit significand).
                var values = MemoryMarshal.Cast<byte, ushort>(span);
                ulong counter = (ulong)(byteOffset / 2) / 4;
                float a = (float)(t.Std * Math.Sqrt(3)), center = (float)t.Center;
                for (int i = 0; i < values.Length; i += 4, counter++)
                {
                    ulong r = Mix(key + counter * 0x9E3779B97F4A7C15UL);
                    for (int j = 0; j < 4 && i + j < values.Length; j++)
                        values[i + j] = BFloat16.ToRaw(center + Unit16((uint)(r >> (16 * j)) & 0xFFFF) * a);
                }
                break;
            }
            case Kind.F32:
            {
                var values = MemoryMarshal.Cast<byte, float>(span);
                long first = byteOffset / 4;
                double a = t.Std * Math.Sqrt(3);
                for (int i = 0; i < values.Length; i++) values[i] = (float)(t.Center + Uniform(key, (ulong)(first + i)) * a);
                break;
            }
            default:
                throw new InvalidOperationException($"Unexpected tensor kind {t.Kind}.");
        }
    }

    // Uniform in (-1, 1) from 16 random bits (bin centres, so symmetric about 0).
    private static float Unit16(uint bits) => (bits + 0.5f) * (2f / 65536) - 1;

    // Uniform in [-1, 1) from element `index` of the stream `key`.
    private static double Uniform(ulong key, ulong index) =>
        (Mix(key + index * 0x9E3779B97F4A7C15UL) >> 11) * (2.0 / (1UL << 53)) - 1;

    // The SplitMix64 finaliser: a bijective 64-bit mix, good enough as a counter-based generator.
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static byte[] BuildCodeTable(out double rms)
    {
        var table = new byte[256];
        double sum = 0;
        for (int i = 0; i < 256; i++)
        {
            float v = (float)(((i + 0.5) / 128.0 - 1.0) * 448.0);
            table[i] = Float8E4M3.ToRaw(v);
            if ((table[i] & 0x7F) == 0x7F) throw new InvalidOperationException("E4M3 code table holds a NaN.");
            double d = Float8E4M3.ToSingle(table[i]);
            sum += d * d;
        }
        rms = Math.Sqrt(sum / 256);
        return table;
    }
}
