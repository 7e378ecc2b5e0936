using System.Numerics.Tensors;
using DeepKernels.Backends;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Activation;

/// <summary>
/// The gated MLP activation: out = SiLU(gate) * up with SiLU(x) = x * sigmoid(x). The tensor
/// API takes the fused gate_up projection output [T, 2I] (gate in the first I columns, up in the
/// last I, as the MoE kernels store it) and writes [T, I].
/// </summary>
public static class SiluAndMul
{
    /// <summary>destination[i] = SiLU(gate[i]) * up[i].</summary>
    public static void Apply(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> destination)
    {
        Guard.Length(up.Length, gate.Length, nameof(up));
        Guard.Length(destination.Length, gate.Length, nameof(destination));
        Core(gate, up, destination);
    }

    /// <summary>Rows of <paramref name="gateUp"/> are [gate (I) | up (I)]; writes rows of I into <paramref name="destination"/>.</summary>
    public static void ApplyFused(ReadOnlySpan<float> gateUp, int intermediate, Span<float> destination)
    {
        Guard.Positive(intermediate, nameof(intermediate));
        if (gateUp.Length % (2 * intermediate) != 0)
            throw new ArgumentException($"Expected {nameof(gateUp)} length to be a multiple of 2 * intermediate = {2 * intermediate}, got {gateUp.Length}.", nameof(gateUp));
        int rows = gateUp.Length / (2 * intermediate);
        Guard.Length(destination.Length, (long)rows * intermediate, nameof(destination));
        for (int r = 0; r < rows; r++)
        {
            var row = gateUp.Slice(r * 2 * intermediate, 2 * intermediate);
            Core(row[..intermediate], row[intermediate..], destination.Slice(r * intermediate, intermediate));
        }
    }

    internal static void Core(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> destination)
    {
        // destination may alias gate or up only if it aliases exactly; use it as scratch in that order.
        if (destination.Overlaps(gate) || destination.Overlaps(up))
        {
            for (int i = 0; i < gate.Length; i++)
            {
                float g = gate[i];
                destination[i] = g / (1f + MathF.Exp(-g)) * up[i];
            }
            return;
        }
        TensorPrimitives.Sigmoid(gate, destination);
        TensorPrimitives.Multiply(destination, gate, destination);
        TensorPrimitives.Multiply(destination, up, destination);
    }

    /// <summary>
    /// <paramref name="gateUp"/>: Float32 [T, 2I]; <paramref name="output"/>: Float32 [T, I].
    /// </summary>
    public static void Apply(Backend backend, TensorView gateUp, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(gateUp, 2, nameof(gateUp));
        Guard.DType(gateUp, DType.Float32, nameof(gateUp));
        long t = gateUp.Dim(0), twoI = gateUp.Dim(1);
        if (twoI <= 0 || twoI % 2 != 0)
            throw new ArgumentException($"Expected {nameof(gateUp)} to have an even, positive column count (gate | up), got {gateUp}.", nameof(gateUp));
        Guard.DType(output, DType.Float32, nameof(output));
        Guard.Shape(output, nameof(output), t, twoI / 2);
        foreach (var (view, name) in new[] { (gateUp, nameof(gateUp)), (output, nameof(output)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        if (t == 0) return;
        var impl = Guard.Implementation<ISiluAndMulBackend>(backend, "SiLU-and-mul");
        impl.SiluAndMul(new SiluAndMulArgs(gateUp, output, (int)t, (int)(twoI / 2)));
    }
}

/// <summary>Validated arguments of <see cref="SiluAndMul"/>.</summary>
internal readonly record struct SiluAndMulArgs(TensorView GateUp, TensorView Output, int Rows, int Intermediate);

/// <summary>A backend's implementation of SiLU-and-mul.</summary>
internal interface ISiluAndMulBackend
{
    void SiluAndMul(in SiluAndMulArgs args);
}
