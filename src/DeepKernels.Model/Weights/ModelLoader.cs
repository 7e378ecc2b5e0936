using System.Globalization;
using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Model.Checkpoint;
using DeepKernels.Model.Config;
using DeepKernels.Model.Safetensors;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Weights;

/// <summary>Options of <see cref="ModelLoader"/>.</summary>
public sealed record LoadOptions
{
    /// <summary>Quantize the BF16 lm_head to FP8 128x128 blocks at load (else it runs as a BF16 x FP32 matmul).</summary>
    public bool QuantizeLmHead { get; init; }

    /// <summary>Called after each tensor group with (done, total, what) for a progress display.</summary>
    public Action<int, int, string>? Progress { get; init; }
}

/// <summary>
/// Loads the weights named as in the Hugging Face DeepSeek-V3 checkpoint onto a backend. FP8
/// projections keep their E4M3 codes and <c>weight_scale_inv</c> blocks as they are; BF16/F32
/// projections (unquantized checkpoints) are quantized to FP8 at load. Every tensor is checked
/// for presence, dtype and shape; problems are <see cref="CheckpointException"/>s naming the
/// file and tensor (malformed files surface as <see cref="Safetensors.SafetensorsFormatException"/>). Layers at index &gt;= num_hidden_layers (multi-token prediction) are skipped.
/// </summary>
public static class ModelLoader
{
    private static readonly DType[] Fp8 = [DType.Float8E4M3];
    private static readonly DType[] Dense = [DType.BFloat16, DType.Float32];
    private static readonly DType[] Projection = [DType.Float8E4M3, DType.BFloat16, DType.Float32];
    private static readonly DType[] F32 = [DType.Float32];

    /// <summary>Loads every weight of <paramref name="config"/> from <paramref name="checkpoint"/>.</summary>
    public static ModelWeights Load(CheckpointDirectory checkpoint, DeepSeekV3Config config, Backend backend, LoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(backend);
        options ??= new LoadOptions();
        var owned = new List<IDisposable>();
        try
        {
            var ctx = new Context(checkpoint, config, backend, owned);
            int total = config.NumHiddenLayers + 2;
            options.Progress?.Invoke(0, total, "embedding");
            int h = config.HiddenSize, v = config.VocabSize;
            var embedding = ctx.Vector("model.embed_tokens.weight", Dense, v, h);
            var layers = new List<LayerWeights>();
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                options.Progress?.Invoke(i + 1, total, $"layer {i}");
                layers.Add(LoadLayer(ctx, i));
            }
            options.Progress?.Invoke(total - 1, total, "lm_head");
            var finalNorm = ctx.Vector("model.norm.weight", Dense, h);
            string headName = config.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
            Bf16Linear? head = null;
            Fp8Linear? headFp8 = null;
            if (options.QuantizeLmHead) headFp8 = ctx.Linear(headName, v, h);
            else head = ctx.Bf16(headName, v, h);
            int mtp = checkpoint.Names.Count(n => IsMtp(n, config.NumHiddenLayers));
            long activePerToken = ActiveBytes(config, layers, head, headFp8);
            options.Progress?.Invoke(total, total, "done");
            return new ModelWeights
            {
                Embedding = embedding,
                Layers = layers,
                FinalNorm = finalNorm,
                LmHead = head,
                LmHeadFp8 = headFp8,
                Bytes = ctx.Bytes,
                Bf16Bytes = ctx.Parameters * 2,
                ActiveBytesPerToken = activePerToken,
                SkippedMtpTensors = mtp,
            };
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>Whether a tensor belongs to a multi-token-prediction layer (index &gt;= num_hidden_layers).</summary>
    public static bool IsMtp(string name, int numHiddenLayers)
    {
        const string prefix = "model.layers.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal)) return false;
        int dot = name.IndexOf('.', prefix.Length);
        return dot > prefix.Length && int.TryParse(name.AsSpan(prefix.Length, dot - prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int layer) && layer >= numHiddenLayers;
    }

    private static long ActiveBytes(DeepSeekV3Config c, List<LayerWeights> layers, Bf16Linear? head, Fp8Linear? headFp8)
    {
        long bytes = (long)c.HiddenSize * 2 + (head?.Bytes ?? headFp8!.Bytes) + c.HiddenSize * 2;
        foreach (var l in layers)
        {
            bytes += l.InputNorm.View.ByteCount + l.PostAttentionNorm.View.ByteCount;
            bytes += l.Attention.Linears.Sum(x => x.Bytes) + l.Attention.KvANorm.View.ByteCount + (l.Attention.QANorm?.View.ByteCount ?? 0);
            if (l.Dense is not null) bytes += l.Dense.Bytes;
            if (l.Moe is { } m)
            {
                bytes += m.Gate.Bytes + (m.Shared?.Bytes ?? 0);
                bytes += (long)Math.Round(m.Experts.Average(e => (double)e.Bytes) * c.NumExpertsPerTok);
            }
        }
        return bytes;
    }

    private static LayerWeights LoadLayer(Context ctx, int i)
    {
        var c = ctx.Config;
        string p = $"model.layers.{i}.";
        int h = c.HiddenSize, heads = c.NumAttentionHeads;
        var attention = LoadAttention(ctx, p + "self_attn.");
        MlpWeights? dense = null;
        MoeWeights? moe = null;
        if (c.IsMoeLayer(i))
        {
            int e = c.NRoutedExperts;
            var gate = ctx.Bf16(p + "mlp.gate.weight", e, h);
            float[] bias = [];
            string biasName = p + "mlp.gate.e_score_correction_bias";
            if (ctx.Checkpoint.Contains(biasName) || c.TopkMethod == "noaux_tc")
            {
                var t = ctx.Checkpoint.Get(biasName, F32, e);
                bias = MemoryMarshal.Cast<byte, float>(CheckpointDirectory.Bytes(t)).ToArray();
            }
            int inter = c.MoeIntermediateSize, sharedInter = c.MoeIntermediateSize * c.NSharedExperts;
            if (inter % 128 == 0 && sharedInter % 128 == 0)
            {
                moe = ctx.StackedMoe(p, gate, bias, e, inter, h, sharedInter);
            }
            else
            {
                var experts = new List<MlpWeights>(e);
                for (int x = 0; x < e; x++) experts.Add(ctx.Mlp($"{p}mlp.experts.{x}.", inter, h));
                MlpWeights? shared = c.NSharedExperts > 0 ? ctx.Mlp(p + "mlp.shared_experts.", sharedInter, h) : null;
                moe = new MoeWeights { Gate = gate, CorrectionBias = bias, Experts = experts, Shared = shared };
            }
        }
        else dense = ctx.Mlp(p + "mlp.", c.IntermediateSize, h);
        _ = heads;
        return new LayerWeights
        {
            Index = i,
            InputNorm = ctx.Vector(p + "input_layernorm.weight", Dense, h),
            PostAttentionNorm = ctx.Vector(p + "post_attention_layernorm.weight", Dense, h),
            Attention = attention,
            Dense = dense,
            Moe = moe,
        };
    }

    private static AttentionWeights LoadAttention(Context ctx, string p)
    {
        var c = ctx.Config;
        int h = c.HiddenSize, heads = c.NumAttentionHeads, qk = c.QkHeadDim, nope = c.QkNopeHeadDim, vd = c.VHeadDim, lora = c.KvLoraRank;
        Fp8Linear? qa = null, qb = null, q = null;
        TensorBuffer? qaNorm = null;
        if (c.QLoraRank is { } ql)
        {
            qa = ctx.Linear(p + "q_a_proj.weight", ql, h);
            qaNorm = ctx.Vector(p + "q_a_layernorm.weight", Dense, ql);
            qb = ctx.Linear(p + "q_b_proj.weight", heads * qk, ql);
        }
        else q = ctx.Linear(p + "q_proj.weight", heads * qk, h);
        var kva = ctx.Linear(p + "kv_a_proj_with_mqa.weight", lora + c.QkRopeHeadDim, h);
        var kvaNorm = ctx.Vector(p + "kv_a_layernorm.weight", Dense, lora);
        var kvb = ctx.Linear(p + "kv_b_proj.weight", heads * (nope + vd), lora);
        var o = ctx.Linear(p + "o_proj.weight", h, heads * vd);
        // Absorption needs W_UK and W_UV per head in float: split the dequantized kv_b_proj
        // (read from the checkpoint on the host: on a device backend the loaded copy is not readable).
        var (kvbCodes, kvbScales) = ctx.ReadProjection(p + "kv_b_proj.weight", heads * (nope + vd), lora);
        double[] full = Dequantize(kvbCodes, kvbScales, heads * (nope + vd), lora);
        var wuk = new float[heads * nope * lora];
        var wuv = new float[heads * vd * lora];
        for (int hh = 0; hh < heads; hh++)
        {
            for (int d = 0; d < nope; d++)
                for (int x = 0; x < lora; x++)
                    wuk[(hh * nope + d) * lora + x] = (float)full[((long)hh * (nope + vd) + d) * lora + x];
            for (int d = 0; d < vd; d++)
                for (int x = 0; x < lora; x++)
                    wuv[(hh * vd + d) * lora + x] = (float)full[((long)hh * (nope + vd) + nope + d) * lora + x];
        }
        return new AttentionWeights { QAProj = qa, QANorm = qaNorm, QBProj = qb, QProj = q, KvAProj = kva, KvANorm = kvaNorm, KvBProj = kvb, OProj = o, WUk = wuk, WUv = wuv };
    }

    private static double[] Dequantize(Float8E4M3[] codes, float[] scales, int n, int k)
    {
        int kBlocks = WeightQuantization.BlockCount(k);
        var result = new double[(long)n * k];
        for (int j = 0; j < n; j++)
            for (int c = 0; c < k; c++)
                result[(long)j * k + c] = (double)(float)codes[(long)j * k + c] * scales[(j / 128) * kBlocks + c / 128];
        return result;
    }

    private sealed class Context(CheckpointDirectory checkpoint, DeepSeekV3Config config, Backend backend, List<IDisposable> owned)
    {
        public CheckpointDirectory Checkpoint { get; } = checkpoint;
        public DeepSeekV3Config Config { get; } = config;
        public long Bytes { get; private set; }
        public long Parameters { get; private set; }

        private T Own<T>(T d) where T : IDisposable
        {
            owned.Add(d);
            return d;
        }

        public TensorBuffer Vector(string name, DType[] dtypes, params long[] shape)
        {
            var t = Checkpoint.Get(name, dtypes, shape);
            var buffer = Own(backend.Upload(CheckpointDirectory.Bytes(t), t.DType, shape));
            Bytes += t.ByteLength;
            Parameters += t.ElementCount;
            return buffer;
        }

        public Bf16Linear Bf16(string name, int n, int k)
        {
            var t = Checkpoint.Get(name, Dense, n, k);
            TensorBuffer buffer;
            if (t.DType == DType.BFloat16) buffer = Own(backend.Upload(CheckpointDirectory.Bytes(t), DType.BFloat16, n, k));
            else
            {
                var f = MemoryMarshal.Cast<byte, float>(CheckpointDirectory.Bytes(t));
                var b = new BFloat16[f.Length];
                BFloat16.FromSingle(f, b);
                buffer = Own(backend.Upload<BFloat16>(b, DType.BFloat16, n, k));
            }
            Bytes += (long)n * k * 2;
            Parameters += (long)n * k;
            return Own(new Bf16Linear(name, buffer));
        }

        public MlpWeights Mlp(string prefix, int inter, int h) =>
            new(Linear(prefix + "gate_proj.weight", inter, h), Linear(prefix + "up_proj.weight", inter, h), Linear(prefix + "down_proj.weight", h, inter));

        /// <summary>The F32 <c>weight_scale_inv</c> [nb, kb] of an FP8 projection, checked finite and positive.</summary>
        private SafetensorsTensor ScaleInv(string name, int nb, int kb)
        {
            string scaleName = name + "_scale_inv";
            var s = Checkpoint.Get(scaleName, F32, nb, kb);
            var values = MemoryMarshal.Cast<byte, float>(CheckpointDirectory.Bytes(s));
            for (int i = 0; i < values.Length; i++)
            {
                if (!float.IsFinite(values[i]) || values[i] <= 0)
                    throw new CheckpointException(s.File.Path, scaleName, $"scale [{i / kb}, {i % kb}] = {values[i]} is not finite and > 0.");
            }
            return s;
        }

        /// <summary>Codes and block scales of a projection (BF16/F32 weights are quantized here), copied out.</summary>
        public (Float8E4M3[] Codes, float[] Scales) ReadProjection(string name, int n, int k)
        {
            var t = Checkpoint.Get(name, Projection, n, k);
            int nb = WeightQuantization.BlockCount(n), kb = WeightQuantization.BlockCount(k);
            if (t.DType == DType.Float8E4M3)
            {
                var s = ScaleInv(name, nb, kb);
                var scaleValues = MemoryMarshal.Cast<byte, float>(CheckpointDirectory.Bytes(s));
                return (MemoryMarshal.Cast<byte, Float8E4M3>(CheckpointDirectory.Bytes(t)).ToArray(), scaleValues.ToArray());
            }
            float[] values = new float[(long)n * k];
            var raw = CheckpointDirectory.Bytes(t);
            if (t.DType == DType.BFloat16) BFloat16.ToSingle(MemoryMarshal.Cast<byte, ushort>(raw), values);
            else MemoryMarshal.Cast<byte, float>(raw).CopyTo(values);
            var codes = new Float8E4M3[values.Length];
            var scales = new float[nb * kb];
            WeightQuantization.Quantize(values, n, k, codes, scales);
            return (codes, scales);
        }

        /// <summary>
        /// Loads all experts of an MoE layer stacked as the fused MoE op wants them: GateUp
        /// [E, 2I, H] (gate rows then up rows; I % 128 == 0 keeps the 128-row scale blocks whole),
        /// Down [E, H, I], and the shared expert likewise; per-expert projections are views.
        /// </summary>
        public MoeWeights StackedMoe(string p, Bf16Linear gate, float[] bias, int e, int inter, int h, int sharedInter)
        {
            int kbH = WeightQuantization.BlockCount(h), kbI = WeightQuantization.BlockCount(inter), nbH = WeightQuantization.BlockCount(h), nbI = inter / 128;
            // The code tensors go straight into device buffers expert by expert: at V3 widths they
            // exceed the largest .NET array (256 x 2 x 2048 x 7168 bytes).
            long guCount = (long)e * 2 * inter * h, dnCount = (long)e * h * inter;
            var guS = new float[e * 2 * nbI * kbH];
            var dnS = new float[e * nbH * kbI];
            var guBuf = Own(backend.Allocate(DType.Float8E4M3, e, 2 * inter, h));
            var dnBuf = Own(backend.Allocate(DType.Float8E4M3, e, h, inter));
            for (int x = 0; x < e; x++)
            {
                string q = $"{p}mlp.experts.{x}.";
                var (gc, gs) = ReadProjection(q + "gate_proj.weight", inter, h);
                var (uc, us) = ReadProjection(q + "up_proj.weight", inter, h);
                var (dc, ds) = ReadProjection(q + "down_proj.weight", h, inter);
                backend.CopyFromHost(MemoryMarshal.AsBytes(gc.AsSpan()), View(guBuf, (long)x * 2 * inter * h, DType.Float8E4M3, inter, h));
                backend.CopyFromHost(MemoryMarshal.AsBytes(uc.AsSpan()), View(guBuf, (long)x * 2 * inter * h + (long)inter * h, DType.Float8E4M3, inter, h));
                gs.CopyTo(guS, x * 2 * nbI * kbH);
                us.CopyTo(guS, x * 2 * nbI * kbH + nbI * kbH);
                backend.CopyFromHost(MemoryMarshal.AsBytes(dc.AsSpan()), View(dnBuf, (long)x * h * inter, DType.Float8E4M3, h, inter));
                ds.CopyTo(dnS, x * nbH * kbI);
            }
            var guSBuf = Own(backend.Upload<float>(guS, DType.Float32, e, 2 * nbI, kbH));
            var dnSBuf = Own(backend.Upload<float>(dnS, DType.Float32, e, nbH, kbI));
            var buffers = new List<TensorBuffer> { guBuf, guSBuf, dnBuf, dnSBuf };
            var experts = new List<MlpWeights>(e);
            for (int x = 0; x < e; x++)
            {
                string q = $"{p}mlp.experts.{x}.";
                experts.Add(new MlpWeights(
                    new Fp8Linear(q + "gate_proj.weight", View(guBuf, (long)x * 2 * inter * h, DType.Float8E4M3, inter, h), View(guSBuf, (long)x * 2 * nbI * kbH, DType.Float32, nbI, kbH)),
                    new Fp8Linear(q + "up_proj.weight", View(guBuf, (long)x * 2 * inter * h + (long)inter * h, DType.Float8E4M3, inter, h), View(guSBuf, (long)x * 2 * nbI * kbH + nbI * kbH, DType.Float32, nbI, kbH)),
                    new Fp8Linear(q + "down_proj.weight", View(dnBuf, (long)x * h * inter, DType.Float8E4M3, h, inter), View(dnSBuf, (long)x * nbH * kbI, DType.Float32, nbH, kbI))));
            }
            long bytes = guCount + guS.Length * 4L + dnCount + dnS.Length * 4L;
            long parameters = guCount + dnCount;
            MlpWeights? shared = null;
            TensorBuffer? sgu = null, sguS = null, sdn = null, sdnS = null;
            if (sharedInter > 0)
            {
                string q = p + "mlp.shared_experts.";
                int nbS = sharedInter / 128, kbS = WeightQuantization.BlockCount(sharedInter);
                var (gc, gs) = ReadProjection(q + "gate_proj.weight", sharedInter, h);
                var (uc, us) = ReadProjection(q + "up_proj.weight", sharedInter, h);
                var (dc, ds) = ReadProjection(q + "down_proj.weight", h, sharedInter);
                sgu = Own(backend.Upload<Float8E4M3>([.. gc, .. uc], DType.Float8E4M3, 2 * sharedInter, h));
                sguS = Own(backend.Upload<float>([.. gs, .. us], DType.Float32, 2 * nbS, kbH));
                sdn = Own(backend.Upload<Float8E4M3>(dc, DType.Float8E4M3, h, sharedInter));
                sdnS = Own(backend.Upload<float>(ds, DType.Float32, nbH, kbS));
                buffers.AddRange([sgu, sguS, sdn, sdnS]);
                shared = new MlpWeights(
                    new Fp8Linear(q + "gate_proj.weight", View(sgu, 0, DType.Float8E4M3, sharedInter, h), View(sguS, 0, DType.Float32, nbS, kbH)),
                    new Fp8Linear(q + "up_proj.weight", View(sgu, (long)sharedInter * h, DType.Float8E4M3, sharedInter, h), View(sguS, (long)nbS * kbH, DType.Float32, nbS, kbH)),
                    new Fp8Linear(q + "down_proj.weight", sdn.View, sdnS.View));
                bytes += 3L * sharedInter * h + (gs.Length + us.Length + ds.Length) * 4L;
                parameters += 3L * sharedInter * h;
            }
            Bytes += bytes;
            Parameters += parameters;
            var layerConfig = new DeepKernels.Ops.MoeLayer.MoeLayerConfig { Hidden = h, Intermediate = inter, NumExperts = e, TopK = Config.NumExpertsPerTok, SharedIntermediate = sharedInter };
            var layer = new DeepKernels.Ops.MoeLayer.MoeLayerWeights(layerConfig, guBuf.View, guSBuf.View, dnBuf.View, dnSBuf.View,
                sgu?.View, sguS?.View, sdn?.View, sdnS?.View);
            return new MoeWeights { Gate = gate, CorrectionBias = bias, Experts = experts, Shared = shared, Layer = layer, StackedBuffers = buffers };
        }

        private static TensorView View(TensorBuffer buffer, long elementOffset, DType dtype, params long[] shape) =>
            new(buffer.View.Data + (nint)(elementOffset * dtype.SizeInBytes()), dtype, buffer.View.Location, shape);

        /// <summary>An FP8 projection with its block scales; BF16/F32 weights are quantized here.</summary>
        public Fp8Linear Linear(string name, int n, int k)
        {
            var t = Checkpoint.Get(name, Projection, n, k);
            int nb = WeightQuantization.BlockCount(n), kb = WeightQuantization.BlockCount(k);
            TensorBuffer weight, scales;
            if (t.DType == DType.Float8E4M3)
            {
                var s = ScaleInv(name, nb, kb);
                var scaleValues = MemoryMarshal.Cast<byte, float>(CheckpointDirectory.Bytes(s));
                weight = Own(backend.Upload(CheckpointDirectory.Bytes(t), DType.Float8E4M3, n, k));
                scales = Own(backend.Upload(CheckpointDirectory.Bytes(s), DType.Float32, nb, kb));
            }
            else
            {
                float[] values = new float[(long)n * k];
                var raw = CheckpointDirectory.Bytes(t);
                if (t.DType == DType.BFloat16) BFloat16.ToSingle(MemoryMarshal.Cast<byte, ushort>(raw), values);
                else MemoryMarshal.Cast<byte, float>(raw).CopyTo(values);
                var codes = new Float8E4M3[values.Length];
                var s = new float[nb * kb];
                WeightQuantization.Quantize(values, n, k, codes, s);
                weight = Own(backend.Upload<Float8E4M3>(codes, DType.Float8E4M3, n, k));
                scales = Own(backend.Upload<float>(s, DType.Float32, nb, kb));
            }
            Bytes += weight.View.ByteCount + scales.View.ByteCount;
            Parameters += (long)n * k;
            return new Fp8Linear(name, weight, scales);
        }
    }
}
