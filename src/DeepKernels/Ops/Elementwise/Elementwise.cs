using DeepKernels.Backends;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Elementwise;

/// <summary>
/// Strided 2-D FP32 elementwise glue of the model graph: residual adds and copies of column
/// slices (e.g. the c_kv part of a [T, 576] latent row) into and out of contiguous tensors.
/// Every operand has its own row and column strides.
/// </summary>
public static class Elementwise
{
    /// <summary>
    /// output = a + b, all Float32 [R, C] with non-negative strides; output may be the very same
    /// view as a or b (in place), and must not otherwise overlap them.
    /// </summary>
    public static void Add(Backend backend, TensorView a, TensorView b, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Check(backend, a, nameof(a));
        Check(backend, b, nameof(b));
        Check(backend, output, nameof(output));
        Guard.Shape(b, nameof(b), a.Dim(0), a.Dim(1));
        Guard.Shape(output, nameof(output), a.Dim(0), a.Dim(1));
        if (a.ElementCount == 0) return;
        Guard.Implementation<IElementwiseBackend>(backend, "elementwise add").Add(new ElementwiseArgs(a, b, output, (int)a.Dim(0), (int)a.Dim(1)));
    }

    /// <summary>destination = source, both Float32 [R, C] with non-negative strides, not overlapping.</summary>
    public static void Copy(Backend backend, TensorView source, TensorView destination)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Check(backend, source, nameof(source));
        Check(backend, destination, nameof(destination));
        Guard.Shape(destination, nameof(destination), source.Dim(0), source.Dim(1));
        if (source.ElementCount == 0) return;
        Guard.Implementation<IElementwiseBackend>(backend, "elementwise copy").Add(new ElementwiseArgs(source, null, destination, (int)source.Dim(0), (int)source.Dim(1)));
    }

    private static void Check(Backend backend, TensorView view, string name)
    {
        Guard.Rank(view, 2, name);
        Guard.DType(view, DType.Float32, name);
        if (view.Stride(0) < 0 || view.Stride(1) < 0) throw new ArgumentException($"Expected non-negative strides for {name}, got {view}.", name);
        if (view.Dim(0) > int.MaxValue || view.Dim(1) > int.MaxValue) throw new ArgumentException($"Expected dimensions below 2^31, got {view}.", name);
        Guard.OnBackend(view, backend, name);
    }
}

/// <summary>Validated arguments of <see cref="Elementwise"/>: Output = A + B, or a copy of A when B is null.</summary>
internal readonly record struct ElementwiseArgs(TensorView A, TensorView? B, TensorView Output, int Rows, int Cols);

/// <summary>A backend's implementation of the elementwise ops.</summary>
internal interface IElementwiseBackend
{
    void Add(in ElementwiseArgs args);
}
