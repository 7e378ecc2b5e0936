using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Memory.KvCache;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// One DeepSeek MLA attention layer for decoding, in the absorbed form:
/// <code>
/// q   = q_b_proj(RMSNorm(q_a_proj(x)))           [T, h, 192] -> q_nope [128], q_pe [64]
/// q_pe = RoPE(q_pe, pos)                           (YaRN, interleaved pairs; see YarnRope)
/// kv  = kv_a_proj_with_mqa(x)                       [T, 576] -> c_kv [512], k_pe [64]
/// c_kv = RMSNorm(c_kv); k_pe = RoPE(k_pe, pos)      -> written to the latent cache
/// q_lat = W_UK^T q_nope                             [T, h, 512]
/// o_lat = MlaDecode([q_lat ; q_pe], cache)          [T, h, 512]
/// y   = o_proj(W_UV o_lat)                          [T, hidden]
/// </code>
/// T = b * s_q new tokens; with s_q &gt; 1 the decode is causal among them. The cache write and
/// the decode run on the cache's backend through the backend ops (so a CUDA cache slots in);
/// the projections run on the host: FP8 block-scaled GEMM (<see cref="Gemm.Fp8Gemm"/>) for FP8
/// weights, else FP32 matmuls (see <see cref="MlaWeights"/>).
/// </summary>
public sealed class MlaAttention
{
    private readonly float[] _wUk;
    private readonly float[] _wUv;
    private readonly YarnRope _rope;
    private readonly ParallelOptions _parallel;

    /// <summary>Creates the layer; validates shapes and splits kv_b_proj into W_UK and W_UV once.</summary>
    public MlaAttention(MlaConfig config, MlaWeights weights)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        config.Validate();
        weights.Validate(config);
        Config = config;
        Weights = weights;
        int h = config.NumHeads;
        _wUk = new float[h * config.QkNopeHeadDim * config.KvLoraRank];
        _wUv = new float[h * config.VHeadDim * config.KvLoraRank];
        MlaAbsorption.Split(weights.KvBProj, h, config.QkNopeHeadDim, config.VHeadDim, _wUk, _wUv);
        _rope = new YarnRope(config.QkRopeHeadDim, config.RopeTheta, config.RopeScaling);
        _parallel = CpuBackend.Default.ParallelOptions;
    }

    /// <summary>The layer's shape.</summary>
    public MlaConfig Config { get; }

    /// <summary>The layer's weights.</summary>
    public MlaWeights Weights { get; }

    /// <summary>
    /// Runs the layer for the step's new tokens: <paramref name="hidden"/> is [b * s_q, hidden]
    /// (sequence-major, then token), <paramref name="output"/> the same shape. The step must come
    /// from <see cref="MlaDecodeStep.Begin"/> on <paramref name="cache"/>'s allocator.
    /// </summary>
    public void Forward(MlaDecodeStep step, PagedLatentCache cache, ReadOnlySpan<float> hidden, Span<float> output)
    {
        ArgumentNullException.ThrowIfNull(step);
        ArgumentNullException.ThrowIfNull(cache);
        var c = Config;
        int b = step.Sequences.Length, sQ = step.SQ, t = b * sQ, h = c.NumHeads;
        int qDim = c.QHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, lat = c.KvLoraRank;
        Guard.Length(hidden.Length, (long)t * c.HiddenSize, nameof(hidden));
        Guard.Length(output.Length, (long)t * c.HiddenSize, nameof(output));
        if (cache.PageSize != step.Schedule.PageSize)
            throw new ArgumentException($"Expected a cache with the step's page size {step.Schedule.PageSize}, got {cache.PageSize}.", nameof(cache));

        // Query path.
        var q = new float[t * h * qDim];
        if (c.QLoraRank > 0)
        {
            var qa = new float[t * c.QLoraRank];
            MlaLinear.Apply(hidden, Weights.QAProj, Weights.QAProjFp8, c.QLoraRank, c.HiddenSize, qa, _parallel);
            Norm.RmsNorm.Apply(qa, Weights.QANorm!, c.RmsNormEps, qa);
            MlaLinear.Apply(qa, Weights.QBProj, Weights.QBProjFp8, h * qDim, c.QLoraRank, q, _parallel);
        }
        else
        {
            MlaLinear.Apply(hidden, Weights.QBProj, Weights.QBProjFp8, h * qDim, c.HiddenSize, q, _parallel);
        }

        // Latent path: c_kv normalized, k_pe rotated, then into the cache.
        var kv = new float[t * (lat + rope)];
        MlaLinear.Apply(hidden, Weights.KvAProj, Weights.KvAProjFp8, lat + rope, c.HiddenSize, kv, _parallel);
        for (int i = 0; i < t; i++)
        {
            var cKv = kv.AsSpan(i * (lat + rope), lat);
            Norm.RmsNorm.Apply(cKv, Weights.KvANorm, c.RmsNormEps, cKv);
        }
        for (int i = 0; i < t; i++) _rope.Apply(kv.AsSpan(i * (lat + rope) + lat, rope), step.Positions[i]);
        var backend = cache.Backend;
        using (var kvTensor = backend.Upload<float>(kv, DType.Float32, t, lat + rope))
            MlaDecode.MlaCacheWrite.Write(backend, cache, kvTensor, step.Slots);

        // Absorbed query [T, h, 576] = [W_UK^T q_nope ; RoPE(q_pe)].
        var qNope = new float[t * h * nope];
        var qAbs = new float[t * h * (lat + rope)];
        for (int r = 0; r < t * h; r++)
        {
            q.AsSpan(r * qDim, nope).CopyTo(qNope.AsSpan(r * nope));
            var pe = qAbs.AsSpan(r * (lat + rope) + lat, rope);
            q.AsSpan(r * qDim + nope, rope).CopyTo(pe);
            _rope.Apply(pe, step.Positions[r / h]);
        }
        var qLat = new float[t * h * lat];
        MlaAbsorption.AbsorbQuery(qNope, _wUk, h, nope, qLat);
        for (int r = 0; r < t * h; r++) qLat.AsSpan(r * lat, lat).CopyTo(qAbs.AsSpan(r * (lat + rope)));

        // Decode on the cache's backend.
        float[] outLatent;
        using (var qTensor = backend.Upload<float>(qAbs, DType.Float32, b, sQ, h, lat + rope))
        using (var table = backend.Upload<int>(step.BlockTable, DType.Int32, b, step.MaxPages))
        using (var lens = backend.Upload<int>(step.Seqlens, DType.Int32, b))
        using (var o = backend.Allocate(DType.Float32, b, sQ, h, lat))
        using (var lse = backend.Allocate(DType.Float32, b, h, sQ))
        {
            MlaDecode.MlaDecode.Run(backend, qTensor, cache, table, lens, c.SoftmaxScale, sQ > 1, o, lse, step.Schedule, step.Sequences);
            outLatent = backend.Download<float>(o);
        }

        // Back to value space, then the output projection.
        var attn = new float[t * h * c.VHeadDim];
        MlaAbsorption.ApplyValueUp(outLatent, _wUv, h, c.VHeadDim, attn);
        MlaLinear.Apply(attn, Weights.OProj, Weights.OProjFp8, c.HiddenSize, h * c.VHeadDim, output, _parallel);
    }
}
