using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Memory.Pool;
using DeepKernels.Model.Weights;
using DeepKernels.Ops.Elementwise;
using DeepKernels.Ops.Embedding;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.Matmul;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Ops.Norm;
using DeepKernels.Ops.Quantize;
using DeepKernels.Ops.Rope;
using DeepKernels.Tensors;

namespace DeepKernels.Model;

/// <summary>
/// The decoder graph on a device-memory backend: the same steps as the host path of
/// <see cref="InferenceSession"/>, each one a backend op on <see cref="TensorView"/>s. Weights
/// stay where <see cref="ModelLoader"/> uploaded them; what the graph needs beyond the checkpoint
/// (W_UK / W_UV per head in FP32, the RoPE cos/sin table, the router correction biases) is uploaded
/// once here. Per step only token ids, positions, cache slots, block tables and sequence lengths
/// go to the device and only the logits come back; temporaries come from a device
/// <see cref="WorkspaceArena"/> reset every step, so after warm-up no step allocates.
/// </summary>
internal sealed class DeviceGraph : IDisposable
{
    private readonly DeepSeekV3Model _model;
    private readonly Backend _backend;
    private readonly MemoryPool _pool;
    private readonly WorkspaceArena _arena;
    private readonly List<TensorBuffer> _owned = [];
    private readonly TensorBuffer _cos, _sin;
    private readonly TensorBuffer[] _wuk, _wuv;
    private readonly TensorBuffer?[] _bias;
    private MoeWorkspace? _moeWorkspace;

    public DeviceGraph(DeepSeekV3Model model, int maxPositions)
    {
        _model = model;
        _backend = model.Backend;
        var c = model.Config;
        var layers = model.Weights.Layers;
        foreach (var layer in layers)
        {
            if (layer.Moe is { Layer: null })
                throw new NotSupportedException($"Layer {layer.Index}: the device graph runs MoE layers through the fused MoE op, which needs moe_intermediate_size and the shared width to be multiples of 128 (got {c.MoeIntermediateSize} and {c.MoeIntermediateSize * c.NSharedExperts}).");
        }
        _pool = new MemoryPool(new BackendMemorySource(_backend));
        _arena = new WorkspaceArena(_pool);
        try
        {
            int half = c.QkRopeHeadDim / 2;
            var cos = new float[maxPositions * half];
            var sin = new float[maxPositions * half];
            for (int p = 0; p < maxPositions; p++) model.Rope.CosSin(p, cos.AsSpan(p * half, half), sin.AsSpan(p * half, half));
            _cos = Own(_backend.Upload<float>(cos, DType.Float32, maxPositions, half));
            _sin = Own(_backend.Upload<float>(sin, DType.Float32, maxPositions, half));
            int heads = c.NumAttentionHeads, lora = c.KvLoraRank;
            _wuk = new TensorBuffer[layers.Count];
            _wuv = new TensorBuffer[layers.Count];
            _bias = new TensorBuffer?[layers.Count];
            for (int l = 0; l < layers.Count; l++)
            {
                var a = layers[l].Attention;
                _wuk[l] = Own(_backend.Upload<float>(a.WUk, DType.Float32, heads, c.QkNopeHeadDim, lora));
                _wuv[l] = Own(_backend.Upload<float>(a.WUv, DType.Float32, heads, c.VHeadDim, lora));
                if (layers[l].Moe is { CorrectionBias.Length: > 0 } moe)
                    _bias[l] = Own(_backend.Upload<float>(moe.CorrectionBias, DType.Float32, moe.CorrectionBias.Length));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Statistics of the device workspace pool.</summary>
    public PoolStatistics PoolStatistics => _pool.Statistics;

    private TensorBuffer Own(TensorBuffer buffer)
    {
        _owned.Add(buffer);
        return buffer;
    }

    /// <summary>
    /// Runs one step. <paramref name="ids"/>, <paramref name="positions"/> and <paramref name="slots"/>
    /// hold the step's <c>total</c> new tokens in sequence order; <paramref name="starts"/>[i] is
    /// sequence i's first row (n + 1 entries); <paramref name="host"/> is the session's host arena
    /// (already reset) for block tables.
    /// </summary>
    public void Forward(IReadOnlyList<int> sequences, KvPageAllocator allocator, PagedLatentCache[] caches,
        ReadOnlySpan<int> ids, ReadOnlySpan<int> positions, ReadOnlySpan<int> slots, ReadOnlySpan<int> starts,
        WorkspaceArena host, Span<float> logits)
    {
        var c = _model.Config;
        var w = _model.Weights;
        var b = _backend;
        int n = sequences.Count, total = ids.Length, h = c.HiddenSize;
        _arena.Reset();
        float eps = (float)c.RmsNormEps;

        // Attention groups: one batched decode call when every sequence brings one token, else one
        // causal call per sequence (s_q = its new tokens). Block tables, lengths and the split-KV
        // schedule are the same for every layer: checked, built and uploaded once per step, so no
        // layer reads anything back from the device.
        bool decode = total == n;
        int groups = decode ? 1 : n;
        var attention = new AttentionGroup[groups];
        for (int g = 0; g < groups; g++)
        {
            int first = decode ? 0 : g, count = decode ? n : 1;
            int[] members = new int[count];
            for (int i = 0; i < count; i++) members[i] = sequences[first + i];
            int maxPages = Math.Max(1, allocator.MaxPages(members));
            var table = host.TakeSpan<int>(count * maxPages);
            var lens = host.TakeSpan<int>(count);
            allocator.ExportBlockTable(members, maxPages, table, lens);
            var tables = MlaBlockTable.Create(b, caches[0], table, lens, _arena.Take(DType.Int32, count, maxPages), _arena.Take(DType.Int32, count), members);
            attention[g] = new AttentionGroup(starts[first], decode ? 1 : starts[g + 1] - starts[g], count, tables);
        }

        var x = _arena.Take(DType.Float32, total, h);
        var xn = _arena.Take(DType.Float32, total, h);
        var branch = _arena.Take(DType.Float32, total, h);
        EmbeddingLookup.Gather(b, w.Embedding.View, ids, x);
        foreach (var layer in w.Layers)
        {
            RmsNorm.Apply(b, x, layer.InputNorm.View, eps, xn);
            Attention(layer, caches[layer.Index], attention, positions, slots, xn, branch);
            Elementwise.Add(b, x, branch, x);
            RmsNorm.Apply(b, x, layer.PostAttentionNorm.View, eps, xn);
            if (layer.Dense is { } dense) Mlp(dense, xn, branch);
            else Moe(layer, xn, branch);
            Elementwise.Add(b, x, branch, x);
        }
        // Only each sequence's last token needs logits: gather those rows (the embedding lookup
        // over the hidden states as an FP32 table) unless every sequence brought one token.
        var last = x;
        if (!decode)
        {
            var rows = host.TakeSpan<int>(n);
            for (int i = 0; i < n; i++) rows[i] = starts[i + 1] - 1;
            last = _arena.Take(DType.Float32, n, h);
            EmbeddingLookup.Gather(b, x, rows, last);
        }
        RmsNorm.Apply(b, last, w.FinalNorm.View, eps, last);
        var deviceLogits = _arena.Take(DType.Float32, n, c.VocabSize);
        if (w.LmHeadFp8 is { } q) Linear(q, last, deviceLogits);
        else BatchedMatmul.Run(b, last, w.LmHead!.Weight.View, deviceLogits);
        b.CopyToHost(deviceLogits, MemoryMarshal.AsBytes(logits));
    }

    private readonly record struct AttentionGroup(int FirstRow, int SQ, int Batch, MlaBlockTable Tables);

    /// <summary>y = x W^T through 1x128 activation quantization and the FP8 GEMM, as <see cref="Fp8Linear.Forward"/> does on the host.</summary>
    private TensorView Linear(Fp8Linear linear, TensorView x, TensorView? output = null)
    {
        var (codes, scales) = Quantize(x);
        return Gemm(linear, codes, scales, output);
    }

    private (TensorView Codes, TensorView Scales) Quantize(TensorView x)
    {
        long rows = x.Dim(0);
        int k = checked((int)x.Dim(1));
        var codes = _arena.Take(DType.Float8E4M3, rows, k);
        var scales = _arena.Take(DType.Float32, rows, ActivationQuantization.GroupCount(k));
        ActivationQuantization.Quantize(_backend, x, codes, scales);
        return (codes, scales);
    }

    private TensorView Gemm(Fp8Linear linear, TensorView codes, TensorView scales, TensorView? output = null)
    {
        var y = output ?? _arena.Take(DType.Float32, codes.Dim(0), linear.OutFeatures);
        Fp8Gemm.Run(_backend, codes, scales, linear.Weight, linear.ScaleInv, y);
        return y;
    }

    private void Attention(LayerWeights layer, PagedLatentCache cache, AttentionGroup[] groups, ReadOnlySpan<int> positions, ReadOnlySpan<int> slots, TensorView xn, TensorView output)
    {
        var c = _model.Config;
        var a = layer.Attention;
        var b = _backend;
        int t = checked((int)xn.Dim(0)), heads = c.NumAttentionHeads, qk = c.QkHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim;
        int lora = c.KvLoraRank, vd = c.VHeadDim, latent = lora + rope;
        const int F = sizeof(float);
        TensorView q;
        if (a.QAProj is { } qa)
        {
            var qLow = Linear(qa, xn);
            RmsNorm.Apply(b, qLow, a.QANorm!.View, (float)c.RmsNormEps, qLow);
            q = Linear(a.QBProj!, qLow);
        }
        else q = Linear(a.QProj!, xn);
        var kv = Linear(a.KvAProj, xn); // [t, 576]: c_kv then k_pe

        // kv_a_layernorm on the c_kv columns (RMSNorm wants contiguous rows: normalise a copy, copy back).
        var kvLatent = new TensorView(kv.Data, DType.Float32, kv.Location, [t, lora], [latent, 1]);
        var kvc = _arena.Take(DType.Float32, t, lora);
        Elementwise.Copy(b, kvLatent, kvc);
        RmsNorm.Apply(b, kvc, a.KvANorm.View, (float)c.RmsNormEps, kvc);
        Elementwise.Copy(b, kvc, kvLatent);
        var kPe = new TensorView(kv.Data + lora * F, DType.Float32, kv.Location, [t, 1, rope], [latent, rope, 1]);
        RotaryEmbedding.Apply(b, kPe, positions, _cos.View, _sin.View, kPe);

        // Absorbed queries [t, heads, 576]: q_nope x W_UK per head into the first 512, RoPE'd q_pe into the last 64.
        var qAbs = _arena.Take(DType.Float32, t, heads, latent);
        var qNope = new TensorView(q.Data, DType.Float32, q.Location, [heads, t, nope], [qk, (long)heads * qk, 1]);
        var wUkT = new TensorView(_wuk[layer.Index].View.Data, DType.Float32, q.Location, [heads, lora, nope], [(long)nope * lora, 1, lora]);
        var qLatent = new TensorView(qAbs.Data, DType.Float32, q.Location, [heads, t, lora], [latent, (long)heads * latent, 1]);
        BatchedMatmul.Run(b, qNope, wUkT, qLatent);
        var qPe = new TensorView(q.Data + nope * F, DType.Float32, q.Location, [t, heads, rope], [(long)heads * qk, qk, 1]);
        var qPeOut = new TensorView(qAbs.Data + lora * F, DType.Float32, q.Location, [t, heads, rope], [(long)heads * latent, latent, 1]);
        RotaryEmbedding.Apply(b, qPe, positions, _cos.View, _sin.View, qPeOut);

        MlaCacheWrite.Write(b, cache, kv, slots);
        var outLat = _arena.Take(DType.Float32, t, heads, lora);
        float scale = (float)c.SoftmaxScale;
        foreach (var g in groups)
        {
            var qg = new TensorView(qAbs.Data + (nint)((long)g.FirstRow * heads * latent * F), DType.Float32, q.Location, g.Batch, g.SQ, heads, latent);
            var og = new TensorView(outLat.Data + (nint)((long)g.FirstRow * heads * lora * F), DType.Float32, q.Location, g.Batch, g.SQ, heads, lora);
            var lse = _arena.Take(DType.Float32, g.Batch, heads, g.SQ);
            MlaDecode.Run(b, qg, cache, g.Tables, scale, causal: g.SQ > 1, og, lse);
        }

        // Values: latent out x W_UV per head -> [t, heads * 128], then o_proj into the output.
        var v = _arena.Take(DType.Float32, t, heads * vd);
        var outHeads = new TensorView(outLat.Data, DType.Float32, q.Location, [heads, t, lora], [lora, (long)heads * lora, 1]);
        var vHeads = new TensorView(v.Data, DType.Float32, q.Location, [heads, t, vd], [vd, (long)heads * vd, 1]);
        BatchedMatmul.Run(b, outHeads, _wuv[layer.Index].View, vHeads);
        Linear(a.OProj, v, output);
    }

    private void Mlp(MlpWeights mlp, TensorView xn, TensorView output)
    {
        // One quantization of the input feeds both the gate and the up GEMM; SiLU-and-mul wants them side by side.
        long t = xn.Dim(0);
        int inter = mlp.Intermediate;
        var (codes, scales) = Quantize(xn);
        var gate = Gemm(mlp.Gate, codes, scales);
        var up = Gemm(mlp.Up, codes, scales);
        var gateUp = _arena.Take(DType.Float32, t, 2 * inter);
        Elementwise.Copy(_backend, gate, new TensorView(gateUp.Data, DType.Float32, gateUp.Location, [t, inter], [2L * inter, 1]));
        Elementwise.Copy(_backend, up, new TensorView(gateUp.Data + inter * sizeof(float), DType.Float32, gateUp.Location, [t, inter], [2L * inter, 1]));
        var act = _arena.Take(DType.Float32, t, inter);
        Ops.Activation.SiluAndMul.Apply(_backend, gateUp, act);
        Linear(mlp.Down, act, output);
    }

    private void Moe(LayerWeights layer, TensorView xn, TensorView output)
    {
        var moe = layer.Moe!;
        var fused = moe.Layer!;
        int rows = checked((int)xn.Dim(0));
        var logits = _arena.Take(DType.Float32, rows, _model.Config.NRoutedExperts);
        BatchedMatmul.Run(_backend, xn, moe.Gate.Weight.View, logits);
        if (_moeWorkspace is null || _moeWorkspace.MaxTokens < rows)
        {
            _moeWorkspace?.Dispose();
            _moeWorkspace = MoeWorkspace.Create(_backend, fused.Config, Math.Max(rows, 16));
        }
        MoeFeedForward.Forward(_backend, fused, _model.RouterConfig!, logits, _bias[layer.Index]?.View, xn, _moeWorkspace, output);
    }

    public void Dispose()
    {
        _moeWorkspace?.Dispose();
        _arena.Dispose();
        _pool.Dispose();
        foreach (var buffer in _owned) buffer.Dispose();
        _owned.Clear();
    }

    /// <summary>Device blocks for the workspace pool, allocated through the backend (its stream-ordered pool on CUDA).</summary>
    private sealed class BackendMemorySource(Backend backend) : IMemorySource
    {
        private readonly Dictionary<nint, TensorBuffer> _blocks = [];

        public MemoryLocation Location => backend.MemoryLocation;

        public int Alignment => 256;

        public nint Allocate(long bytes)
        {
            var buffer = backend.Allocate(DType.UInt8, bytes);
            _blocks.Add(buffer.View.Data, buffer);
            return buffer.View.Data;
        }

        public void Free(nint address, long bytes)
        {
            if (_blocks.Remove(address, out var buffer)) buffer.Dispose();
        }
    }
}
