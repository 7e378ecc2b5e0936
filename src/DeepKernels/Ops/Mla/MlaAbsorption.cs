using System.Numerics.Tensors;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// Weight absorption for MLA decode. kv_b_proj ([h * (nope + v), 512], rows of head i:
/// [i*(nope+v), i*(nope+v)+nope) = W_UK_i, the next v rows = W_UV_i) decompresses the latent
/// c_kv into per-head keys k_nope = W_UK c_kv and values v = W_UV c_kv. Since
/// q_nope · (W_UK c_kv) = (W_UK^T q_nope) · c_kv, the query is moved into latent space once
/// (<see cref="AbsorbQuery"/>) and attention runs directly on the cached latents; the
/// attention output, a mix of latents, goes back to value space with W_UV
/// (<see cref="ApplyValueUp"/>). DeepSeek-V3: nope = v = 128, latent = 512.
/// </summary>
public static class MlaAbsorption
{
    /// <summary>Latent width (kv_lora_rank).</summary>
    public const int LatentDim = 512;

    /// <summary>
    /// Splits kv_b_proj into W_UK [h, nope, 512] and W_UV [h, v, 512] (both row-major, as stored).
    /// </summary>
    public static void Split(ReadOnlySpan<float> kvBProj, int heads, int qkNopeDim, int vHeadDim, Span<float> wUk, Span<float> wUv)
    {
        Guard.Positive(heads, nameof(heads));
        Guard.Positive(qkNopeDim, nameof(qkNopeDim));
        Guard.Positive(vHeadDim, nameof(vHeadDim));
        int per = qkNopeDim + vHeadDim;
        Guard.Length(kvBProj.Length, (long)heads * per * LatentDim, nameof(kvBProj));
        Guard.Length(wUk.Length, (long)heads * qkNopeDim * LatentDim, nameof(wUk));
        Guard.Length(wUv.Length, (long)heads * vHeadDim * LatentDim, nameof(wUv));
        for (int h = 0; h < heads; h++)
        {
            kvBProj.Slice(h * per * LatentDim, qkNopeDim * LatentDim).CopyTo(wUk.Slice(h * qkNopeDim * LatentDim));
            kvBProj.Slice((h * per + qkNopeDim) * LatentDim, vHeadDim * LatentDim).CopyTo(wUv.Slice(h * vHeadDim * LatentDim));
        }
    }

    /// <summary>
    /// q_latent[t, h, :] = W_UK_h^T q_nope[t, h, :] for <paramref name="qNope"/> [tokens, h, nope]
    /// into <paramref name="qLatent"/> [tokens, h, 512], with W_UK [h, nope, 512].
    /// </summary>
    public static void AbsorbQuery(ReadOnlySpan<float> qNope, ReadOnlySpan<float> wUk, int heads, int qkNopeDim, Span<float> qLatent)
    {
        Guard.Positive(heads, nameof(heads));
        Guard.Positive(qkNopeDim, nameof(qkNopeDim));
        Guard.Length(wUk.Length, (long)heads * qkNopeDim * LatentDim, nameof(wUk));
        if (qNope.Length % (heads * qkNopeDim) != 0)
            throw new ArgumentException($"Expected qNope length to be a multiple of heads * nope = {heads * qkNopeDim}, got {qNope.Length}.", nameof(qNope));
        int rows = qNope.Length / qkNopeDim;
        Guard.Length(qLatent.Length, (long)rows * LatentDim, nameof(qLatent));
        for (int r = 0; r < rows; r++)
        {
            int h = r % heads;
            var dst = qLatent.Slice(r * LatentDim, LatentDim);
            dst.Clear();
            var q = qNope.Slice(r * qkNopeDim, qkNopeDim);
            var w = wUk.Slice(h * qkNopeDim * LatentDim, qkNopeDim * LatentDim);
            for (int d = 0; d < qkNopeDim; d++)
                TensorPrimitives.MultiplyAdd(w.Slice(d * LatentDim, LatentDim), q[d], dst, dst);
        }
    }

    /// <summary>
    /// o[t, h, :] = W_UV_h out_latent[t, h, :] for <paramref name="outLatent"/> [tokens, h, 512]
    /// into <paramref name="output"/> [tokens, h, v], with W_UV [h, v, 512].
    /// </summary>
    public static void ApplyValueUp(ReadOnlySpan<float> outLatent, ReadOnlySpan<float> wUv, int heads, int vHeadDim, Span<float> output)
    {
        Guard.Positive(heads, nameof(heads));
        Guard.Positive(vHeadDim, nameof(vHeadDim));
        Guard.Length(wUv.Length, (long)heads * vHeadDim * LatentDim, nameof(wUv));
        if (outLatent.Length % (heads * LatentDim) != 0)
            throw new ArgumentException($"Expected outLatent length to be a multiple of heads * 512 = {heads * LatentDim}, got {outLatent.Length}.", nameof(outLatent));
        int rows = outLatent.Length / LatentDim;
        Guard.Length(output.Length, (long)rows * vHeadDim, nameof(output));
        for (int r = 0; r < rows; r++)
        {
            int h = r % heads;
            var x = outLatent.Slice(r * LatentDim, LatentDim);
            for (int d = 0; d < vHeadDim; d++)
                output[r * vHeadDim + d] = TensorPrimitives.Dot(wUv.Slice((h * vHeadDim + d) * LatentDim, LatentDim), x);
        }
    }
}
