using System.Numerics.Tensors;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Memory.Pool;
using DeepKernels.Ops.Mla;
using DeepKernels.Model.Weights;
using DeepKernels.Ops.Activation;
using DeepKernels.Ops.Embedding;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Ops.Norm;
using DeepKernels.Tensors;

namespace DeepKernels.Model;

/// <summary>
/// Runs a <see cref="DeepSeekV3Model"/> over several sequences: one paged latent cache per
/// layer (all layers share one page allocator, so one block table serves every layer) and a
/// <see cref="WorkspaceArena"/> reset at every step for all temporaries. A step takes the new
/// tokens of some sequences (a whole prompt for prefill, one token for decode), appends their
/// latents to the cache and returns the logits of each sequence's last new token.
/// Prefill runs the same absorbed attention op as decode, with s_q = prompt length and a causal
/// mask. On a host-memory backend the graph runs on spans; on a device-memory backend (CUDA)
/// every step is a chain of backend ops over device tensors with a device workspace arena, and
/// only ids, positions, slots, block tables and lengths are uploaded and the logits downloaded.
/// Not thread-safe.
/// </summary>
public sealed class InferenceSession : IDisposable
{
    private readonly DeepSeekV3Model _model;
    private readonly KvPageAllocator _allocator;
    private readonly PagedLatentCache[] _caches;
    private readonly MemoryPool _pool;
    private readonly WorkspaceArena _arena;
    private readonly int _maxTokens;
    private MoeWorkspace? _moeWorkspace;
    private readonly DeviceGraph? _device;

    internal InferenceSession(DeepSeekV3Model model, int maxSequences, int maxTokensPerSequence, int pageSize, LatentCacheLayout layout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSequences, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokensPerSequence, 1);
        if (maxTokensPerSequence > model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(maxTokensPerSequence), maxTokensPerSequence, $"Expected at most max_position_embeddings = {model.Config.MaxPositionEmbeddings} tokens per sequence.");
        _model = model;
        _maxTokens = maxTokensPerSequence;
        int pagesPerSequence = (maxTokensPerSequence + pageSize - 1) / pageSize;
        int pages = maxSequences * pagesPerSequence;
        _allocator = new KvPageAllocator(pages, pageSize);
        _caches = new PagedLatentCache[model.Config.NumHiddenLayers];
        for (int l = 0; l < _caches.Length; l++) _caches[l] = new PagedLatentCache(model.Backend, pages, pageSize, layout, _allocator);
        _pool = MemoryPool.CreateHost();
        _arena = new WorkspaceArena(_pool);
        if (model.Backend.MemoryLocation == MemoryLocation.Device)
        {
            try
            {
                _device = new DeviceGraph(model, maxTokensPerSequence);
            }
            catch
            {
                Dispose();
                throw;
            }
        }
    }

    /// <summary>The model.</summary>
    public DeepSeekV3Model Model => _model;

    /// <summary>Statistics of the host workspace pool (flat after the first decode step).</summary>
    public PoolStatistics PoolStatistics => _pool.Statistics;

    /// <summary>
    /// Statistics of the device workspace pool on a device-memory backend (flat after the first
    /// decode step), null on host backends.
    /// </summary>
    public PoolStatistics? DevicePoolStatistics => _device?.PoolStatistics;

    /// <summary>Bytes of all layers' latent caches.</summary>
    public long CacheBytes => _caches.Sum(c => c.Storage.ByteCount);

    /// <summary>Cache bytes per token summed over layers.</summary>
    public long CacheBytesPerToken => (long)_caches.Length * (_caches.Length == 0 ? 0 : _caches[0].BytesPerToken);

    /// <summary>Starts a new, empty sequence and returns its id.</summary>
    public int CreateSequence() => _allocator.CreateSequence();

    /// <summary>Frees a sequence's pages.</summary>
    public void FreeSequence(int sequence) => _allocator.Free(sequence);

    /// <summary>Tokens a sequence holds.</summary>
    public int Length(int sequence) => _allocator.Length(sequence);

    /// <summary>
    /// One step: appends <paramref name="tokens"/>[i] to <paramref name="sequences"/>[i] and writes
    /// the logits of each sequence's last new token into <paramref name="logits"/> ([n, vocab]).
    /// </summary>
    public unsafe void Forward(IReadOnlyList<int> sequences, IReadOnlyList<int[]> tokens, Span<float> logits)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        ArgumentNullException.ThrowIfNull(tokens);
        var c = _model.Config;
        var w = _model.Weights;
        int n = sequences.Count;
        if (tokens.Count != n) throw new ArgumentException($"Expected {n} token arrays (one per sequence), got {tokens.Count}.", nameof(tokens));
        Guard.Length(logits.Length, (long)n * c.VocabSize, nameof(logits));
        int total = 0;
        for (int i = 0; i < n; i++)
        {
            if (tokens[i] is null || tokens[i].Length == 0) throw new ArgumentException($"Sequence {sequences[i]} has no new tokens.", nameof(tokens));
            EmbeddingLookup.CheckIds(tokens[i], c.VocabSize);
            if (_allocator.Length(sequences[i]) + tokens[i].Length > _maxTokens)
                throw new ArgumentException($"Sequence {sequences[i]} would hold {_allocator.Length(sequences[i]) + tokens[i].Length} tokens, more than the session's {_maxTokens}.", nameof(tokens));
            total += tokens[i].Length;
        }
        if (n == 0) return;
        int neededPages = 0;
        for (int i = 0; i < n; i++)
        {
            int len = _allocator.Length(sequences[i]);
            neededPages += _allocator.PagesFor(len + tokens[i].Length) - _allocator.PagesFor(len);
        }
        if (neededPages > _allocator.FreePages)
            throw new InvalidOperationException($"The KV cache has {_allocator.FreePages} free pages but this step needs {neededPages}; create the session with more sequences or tokens, or free finished sequences.");
        _arena.Reset();
        int h = c.HiddenSize;

        // Positions and cache slots: reserve the new tokens once (shared by every layer).
        var ids = _arena.TakeSpan<int>(total);
        var positions = _arena.TakeSpan<int>(total);
        var slots = _arena.TakeSpan<int>(total);
        var starts = _arena.TakeSpan<int>(n + 1);
        int row = 0;
        for (int i = 0; i < n; i++)
        {
            starts[i] = row;
            int start = _allocator.Append(sequences[i], tokens[i].Length);
            _allocator.GetSlots(sequences[i], start, slots.Slice(row, tokens[i].Length));
            for (int t = 0; t < tokens[i].Length; t++)
            {
                ids[row] = tokens[i][t];
                positions[row] = start + t;
                row++;
            }
        }
        starts[n] = total;
        if (_device is not null)
        {
            _device.Forward(sequences, _allocator, _caches, ids, positions, slots, starts, _arena, logits);
            return;
        }

        var x = _arena.TakeSpan<float>(total * h);
        var xn = _arena.TakeSpan<float>(total * h);
        var branch = _arena.TakeSpan<float>(total * h);
        if (w.Embedding.View.DType == DType.BFloat16) EmbeddingLookup.Gather(w.Embedding.View.AsSpan<BFloat16>(), h, ids, x);
        else EmbeddingLookup.Gather(w.Embedding.View.AsSpan<float>(), h, ids, x);
        var step = new Step(this, sequences, starts, positions, slots, total);
        foreach (var layer in w.Layers)
        {
            NormRows(x, layer.InputNorm, xn, total);
            Attention(layer, step, xn, branch);
            TensorPrimitives.Add(x, branch, x);
            NormRows(x, layer.PostAttentionNorm, xn, total);
            if (layer.Dense is { } dense) Mlp(dense, xn, total, branch);
            else Moe(layer.Moe!, xn, total, branch);
            TensorPrimitives.Add(x, branch, x);
        }
        // Only each sequence's last token needs logits.
        var last = _arena.TakeSpan<float>(n * h);
        for (int i = 0; i < n; i++) x.Slice((starts[i + 1] - 1) * h, h).CopyTo(last.Slice(i * h, h));
        NormRows(last, w.FinalNorm, last, n);
        if (w.LmHeadFp8 is { } q) q.Forward(last, n, logits, _arena.TakeSpan<float>(q.ScratchFloats(n)));
        else w.LmHead!.Forward(last, n, logits);
    }

    private readonly ref struct Step(InferenceSession session, IReadOnlyList<int> sequences, Span<int> starts, Span<int> positions, Span<int> slots, int total)
    {
        public readonly InferenceSession Session = session;
        public readonly IReadOnlyList<int> Sequences = sequences;
        public readonly Span<int> Starts = starts;
        public readonly Span<int> Positions = positions;
        public readonly Span<int> Slots = slots;
        public readonly int Total = total;
    }

    private void NormRows(Span<float> input, Backends.TensorBuffer weight, Span<float> output, int rows)
    {
        float eps = (float)_model.Config.RmsNormEps;
        int h = (int)weight.View.Dim(0);
        if (weight.View.DType == DType.BFloat16) RmsNorm.Apply(input[..(rows * h)], weight.View.AsSpan<BFloat16>(), eps, output[..(rows * h)]);
        else RmsNorm.Apply(input[..(rows * h)], weight.View.AsSpan<float>(), eps, output[..(rows * h)]);
    }

    private Span<float> Linear(Fp8Linear linear, ReadOnlySpan<float> input, int rows)
    {
        var y = _arena.TakeSpan<float>(rows * linear.OutFeatures);
        linear.Forward(input, rows, y, _arena.TakeSpan<float>(linear.ScratchFloats(rows)));
        return y;
    }

    private unsafe void Attention(LayerWeights layer, Step step, ReadOnlySpan<float> xn, Span<float> output)
    {
        var c = _model.Config;
        var a = layer.Attention;
        int t = step.Total, heads = c.NumAttentionHeads, qk = c.QkHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim;
        int lora = c.KvLoraRank, vd = c.VHeadDim, latent = lora + rope;
        Span<float> q;
        if (a.QAProj is { } qa)
        {
            var qLow = Linear(qa, xn, t);
            NormRows(qLow, a.QANorm!, qLow, t);
            q = Linear(a.QBProj!, qLow, t);
        }
        else q = Linear(a.QProj!, xn, t);
        var kv = Linear(a.KvAProj, xn, t); // [t, 576]: c_kv then k_pe
        var cos = _arena.TakeSpan<float>(rope / 2);
        var sin = _arena.TakeSpan<float>(rope / 2);
        var qAbs = _arena.TakeSpan<float>(t * heads * latent);
        var kvNorm = _arena.TakeSpan<float>(lora);
        bool bf16Norm = a.KvANorm.View.DType == DType.BFloat16;
        for (int r = 0; r < t; r++)
        {
            var kvRow = kv.Slice(r * latent, latent);
            if (bf16Norm) RmsNorm.Apply(kvRow[..lora], a.KvANorm.View.AsSpan<BFloat16>(), (float)c.RmsNormEps, kvNorm);
            else RmsNorm.Apply(kvRow[..lora], a.KvANorm.View.AsSpan<float>(), (float)c.RmsNormEps, kvNorm);
            kvNorm.CopyTo(kvRow);
            _model.Rope.CosSin(step.Positions[r], cos, sin);
            YarnRope.Apply(kvRow.Slice(lora, rope), cos, sin);
            for (int hh = 0; hh < heads; hh++)
            {
                var qHead = q.Slice((r * heads + hh) * qk, qk);
                var dst = qAbs.Slice((r * heads + hh) * latent, latent);
                // Absorb W_UK: q_lat[c] = sum_d W_UK[h, d, c] * q_nope[d].
                var qLat = dst[..lora];
                qLat.Clear();
                for (int d = 0; d < nope; d++)
                    TensorPrimitives.MultiplyAdd(a.WUk.AsSpan((hh * nope + d) * lora, lora), qHead[d], qLat, qLat);
                qHead.Slice(nope, rope).CopyTo(dst[lora..]);
                YarnRope.Apply(dst[lora..], cos, sin);
            }
        }
        // Write the new latents into this layer's cache (positions were reserved once per step).
        var cache = _caches[layer.Index];
        fixed (float* pkv = kv)
        {
            var latents = new TensorView((nint)pkv, DType.Float32, MemoryLocation.Host, t, latent);
            MlaCacheWrite.Write(_model.Backend, cache, latents, step.Slots);
        }
        var outLat = _arena.TakeSpan<float>(t * heads * lora);
        float scale = (float)c.SoftmaxScale;
        int n = step.Sequences.Count;
        bool decode = t == n;
        if (decode)
            RunAttention(cache, step, 0, n, 1, qAbs, outLat, scale);
        else
            for (int i = 0; i < n; i++)
            {
                int s0 = step.Starts[i], len = step.Starts[i + 1] - s0;
                RunAttention(cache, step, i, 1, len, qAbs.Slice(s0 * heads * latent, len * heads * latent), outLat.Slice(s0 * heads * lora, len * heads * lora), scale);
            }
        // Decompress values with W_UV per head, then o_proj.
        var v = _arena.TakeSpan<float>(t * heads * vd);
        for (int r = 0; r < t; r++)
            for (int hh = 0; hh < heads; hh++)
            {
                var o = outLat.Slice((r * heads + hh) * lora, lora);
                for (int d = 0; d < vd; d++)
                    v[(r * heads + hh) * vd + d] = TensorPrimitives.Dot(a.WUv.AsSpan((hh * vd + d) * lora, lora), o);
            }
        a.OProj.Forward(v, t, output[..(t * c.HiddenSize)], _arena.TakeSpan<float>(a.OProj.ScratchFloats(t)));
    }

    private void RunAttention(PagedLatentCache cache, Step step, int first, int count, int sQ, Span<float> q, Span<float> output, float scale)
    {
        var c = _model.Config;
        int heads = c.NumAttentionHeads;
        Span<int> seqs = stackalloc int[count];
        for (int i = 0; i < count; i++) seqs[i] = step.Sequences[first + i];
        int maxPages = Math.Max(1, _allocator.MaxPages(seqs));
        var table = _arena.TakeSpan<int>(count * maxPages);
        var lens = _arena.TakeSpan<int>(count);
        _allocator.ExportBlockTable(seqs, maxPages, table, lens);
        var lse = _arena.TakeSpan<float>(count * heads * sQ);
        MlaDecode.Run(cache, q, count, sQ, heads, table, lens, scale, causal: sQ > 1, output, lse);
    }

    private void Mlp(MlpWeights mlp, ReadOnlySpan<float> input, int rows, Span<float> output)
    {
        var gate = Linear(mlp.Gate, input, rows);
        var up = Linear(mlp.Up, input, rows);
        var act = _arena.TakeSpan<float>(rows * mlp.Intermediate);
        SiluAndMul.Apply(gate, up, act);
        mlp.Down.Forward(act, rows, output[..(rows * mlp.Down.OutFeatures)], _arena.TakeSpan<float>(mlp.Down.ScratchFloats(rows)));
    }

    private unsafe void Moe(MoeWeights moe, ReadOnlySpan<float> input, int rows, Span<float> output)
    {
        var c = _model.Config;
        int h = c.HiddenSize, e = c.NRoutedExperts, k = c.NumExpertsPerTok;
        var logits = _arena.TakeSpan<float>(rows * e);
        moe.Gate.Forward(input, rows, logits);
        var expertIds = _arena.TakeSpan<int>(rows * k);
        var weights = _arena.TakeSpan<float>(rows * k);
        MoeRouting.Route(logits, e, moe.CorrectionBias, _model.RouterConfig!, expertIds, weights);
        var out_ = output[..(rows * h)];
        if (moe.Layer is { } fused)
        {
            // The fused MoE op: one grouped gate_up and one grouped down GEMM over all chosen experts, plus the shared expert.
            if (_moeWorkspace is null || _moeWorkspace.MaxTokens < rows)
            {
                _moeWorkspace?.Dispose();
                _moeWorkspace = MoeWorkspace.Create(_model.Backend, fused.Config, Math.Max(rows, 16));
            }
            fixed (float* px = input, pw = weights, po = out_)
            fixed (int* pi = expertIds)
            {
                const MemoryLocation H = MemoryLocation.Host;
                MoeFeedForward.Forward(_model.Backend, fused,
                    new TensorView((nint)px, DType.Float32, H, rows, h),
                    new TensorView((nint)pi, DType.Int32, H, rows, k),
                    new TensorView((nint)pw, DType.Float32, H, rows, k),
                    _moeWorkspace,
                    new TensorView((nint)po, DType.Float32, H, rows, h));
            }
            return;
        }
        if (moe.Shared is { } shared) Mlp(shared, input, rows, out_);
        else out_.Clear();
        // Group the chosen (token, slot) pairs by expert so each expert runs once over its rows.
        var counts = _arena.TakeSpan<int>(e);
        counts.Clear();
        foreach (int id in expertIds) counts[id]++;
        var members = _arena.TakeSpan<int>(rows * k);
        var xs = _arena.TakeSpan<float>(rows * k * h);
        var ys = _arena.TakeSpan<float>(rows * k * h);
        for (int x = 0; x < e; x++)
        {
            int m = counts[x];
            if (m == 0) continue;
            int j = 0;
            for (int p = 0; p < rows * k; p++)
            {
                if (expertIds[p] != x) continue;
                members[j] = p;
                input.Slice(p / k * h, h).CopyTo(xs.Slice(j * h, h));
                j++;
            }
            Mlp(moe.Experts[x], xs[..(m * h)], m, ys);
            for (j = 0; j < m; j++)
            {
                int p = members[j];
                TensorPrimitives.MultiplyAdd(ys.Slice(j * h, h), weights[p], out_.Slice(p / k * h, h), out_.Slice(p / k * h, h));
            }
        }
    }

    /// <summary>Frees caches and workspace.</summary>
    public void Dispose()
    {
        foreach (var cache in _caches) cache?.Dispose();
        _moeWorkspace?.Dispose();
        _device?.Dispose();
        _arena.Dispose();
        _pool.Dispose();
    }
}
