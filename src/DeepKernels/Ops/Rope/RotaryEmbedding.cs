using DeepKernels.Backends;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Rope;

/// <summary>
/// Rotary position embedding on interleaved pairs from a precomputed cos/sin table (e.g. filled
/// from <see cref="Mla.YarnRope.CosSin"/>, magnitude included), as DeepSeek-V3 applies it to
/// q_pe and k_pe: for row t at position p and pair i,
/// out[2i] = x[2i] cos[p,i] - x[2i+1] sin[p,i], out[2i+1] = x[2i] sin[p,i] + x[2i+1] cos[p,i],
/// each product and sum rounded to FP32 separately (the same arithmetic as
/// <see cref="Mla.YarnRope.Apply(Span{float}, ReadOnlySpan{float}, ReadOnlySpan{float})"/>).
/// </summary>
public static class RotaryEmbedding
{
    /// <summary>
    /// Rotates <paramref name="input"/> (Float32 [T, H, D], any non-negative strides, D even and
    /// pairs contiguous) into <paramref name="output"/> (same shape; may be the very same view
    /// for in place, must not otherwise overlap). <paramref name="positions"/>: T host values,
    /// each in [0, P); <paramref name="cos"/> and <paramref name="sin"/>: contiguous Float32
    /// [P, D/2] on the backend.
    /// </summary>
    public static void Apply(Backend backend, TensorView input, ReadOnlySpan<int> positions, TensorView cos, TensorView sin, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(input, 3, nameof(input));
        Guard.DType(input, DType.Float32, nameof(input));
        long t = input.Dim(0), h = input.Dim(1), d = input.Dim(2);
        if (d <= 0 || d % 2 != 0) throw new ArgumentException($"Expected an even, positive rotary dim, got {input}.", nameof(input));
        Guard.DType(output, DType.Float32, nameof(output));
        Guard.Shape(output, nameof(output), t, h, d);
        Guard.Length(positions.Length, t, nameof(positions));
        Guard.Rank(cos, 2, nameof(cos));
        Guard.DType(cos, DType.Float32, nameof(cos));
        long p = cos.Dim(0);
        Guard.Shape(cos, nameof(cos), p, d / 2);
        Guard.DType(sin, DType.Float32, nameof(sin));
        Guard.Shape(sin, nameof(sin), p, d / 2);
        foreach (var (view, name) in new[] { (input, nameof(input)), (output, nameof(output)) })
        {
            if (view.Stride(2) != 1) throw new ArgumentException($"Expected {name} with contiguous pairs (last stride 1), got {view}.", name);
            if (view.Stride(0) < 0 || view.Stride(1) < 0) throw new ArgumentException($"Expected non-negative strides for {name}, got {view}.", name);
            Guard.OnBackend(view, backend, name);
        }
        foreach (var (view, name) in new[] { (cos, nameof(cos)), (sin, nameof(sin)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        for (int i = 0; i < positions.Length; i++)
        {
            if ((uint)positions[i] >= (ulong)p)
                throw new ArgumentOutOfRangeException(nameof(positions), positions[i], $"Expected positions[{i}] in [0, {p}) (rows of the cos/sin table), got {positions[i]}.");
        }
        if (t == 0 || h == 0) return;
        if (t > int.MaxValue || h * d / 2 > int.MaxValue) throw new ArgumentException($"Expected T and H * D/2 below 2^31, got {input}.", nameof(input));
        var impl = Guard.Implementation<IRotaryEmbeddingBackend>(backend, "rotary embedding");
        impl.RotaryEmbedding(new RotaryEmbeddingArgs(input, output, cos, sin, (int)t, (int)h, (int)(d / 2)), positions);
    }
}

/// <summary>Validated arguments of <see cref="RotaryEmbedding"/> (positions passed separately as a host span).</summary>
internal readonly record struct RotaryEmbeddingArgs(TensorView Input, TensorView Output, TensorView Cos, TensorView Sin, int Rows, int Heads, int Half);

/// <summary>A backend's implementation of the rotary embedding.</summary>
internal interface IRotaryEmbeddingBackend
{
    void RotaryEmbedding(in RotaryEmbeddingArgs args, ReadOnlySpan<int> positions);
}
