using DeepKernels.Tensors;

namespace DeepKernels;

/// <summary>Argument checks whose messages name the argument, the expected and the actual value.</summary>
internal static class Guard
{
    public static void Positive(long value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"Expected {name} > 0, got {value}.");
    }

    public static void NonNegative(long value, string name)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(name, value, $"Expected {name} >= 0, got {value}.");
    }

    public static void Length(int actual, long expected, string name)
    {
        if (actual != expected) throw new ArgumentException($"Expected {name} to have length {expected}, got {actual}.", name);
    }

    public static void AtLeast(int actual, long expected, string name)
    {
        if (actual < expected) throw new ArgumentException($"Expected {name} to have length >= {expected}, got {actual}.", name);
    }

    public static void AllFinitePositive(ReadOnlySpan<float> values, string name)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]) || values[i] <= 0)
                throw new ArgumentException($"Expected {name}[{i}] to be finite and > 0, got {values[i]}.", name);
        }
    }

    public static void DType(TensorView view, DType expected, string name)
    {
        if (view.DType != expected) throw new ArgumentException($"Expected {name} of dtype {expected}, got {view}.", name);
    }

    public static void DType(TensorView view, DType a, DType b, string name)
    {
        if (view.DType != a && view.DType != b) throw new ArgumentException($"Expected {name} of dtype {a} or {b}, got {view}.", name);
    }

    public static void Shape(TensorView view, string name, params ReadOnlySpan<long> expected)
    {
        bool ok = view.Rank == expected.Length;
        for (int i = 0; ok && i < expected.Length; i++) ok = view.Dim(i) == expected[i];
        if (!ok) throw new ArgumentException($"Expected {name} of shape [{string.Join(", ", expected.ToArray())}], got {view}.", name);
    }

    public static void Rank(TensorView view, int rank, string name)
    {
        if (view.Rank != rank) throw new ArgumentException($"Expected {name} of rank {rank}, got {view}.", name);
    }

    public static void Contiguous(TensorView view, string name)
    {
        if (!view.IsContiguous) throw new ArgumentException($"Expected {name} to be contiguous, got {view}.", name);
    }

    public static void OnBackend(TensorView view, Backends.Backend backend, string name)
    {
        if (view.Location != backend.MemoryLocation)
            throw new ArgumentException($"Expected {name} in {backend.MemoryLocation} memory for backend '{backend.Name}', got {view}.", name);
        if (view.Data == 0 && view.ElementCount > 0)
            throw new ArgumentException($"Expected {name} to have a non-null address.", name);
    }

    public static T Implementation<T>(Backends.Backend backend, string op) where T : class
    {
        ObjectDisposedException.ThrowIf(backend.IsDisposed, backend);
        return backend as T ?? throw new NotSupportedException($"Backend '{backend.Name}' does not implement {op}.");
    }
}
