using System.Runtime.InteropServices;
using DeepKernels.Tensors;

namespace DeepKernels.Backends;

/// <summary>A tensor that owns its memory on one backend; disposing frees it.</summary>
public sealed class TensorBuffer : IDisposable
{
    private readonly SafeHandle _storage;

    internal TensorBuffer(Backend backend, SafeHandle storage, TensorView view)
    {
        Backend = backend;
        _storage = storage;
        View = view;
    }

    /// <summary>The backend that owns the memory.</summary>
    public Backend Backend { get; }

    /// <summary>The contiguous view of the whole buffer.</summary>
    public TensorView View { get; }

    /// <summary>Whether the memory has been released.</summary>
    public bool IsDisposed => _storage.IsClosed;

    /// <summary>Implicit use as a view.</summary>
    public static implicit operator TensorView(TensorBuffer buffer) => buffer.View;

    /// <summary>Frees the memory; safe to call more than once.</summary>
    public void Dispose() => _storage.Dispose();

    /// <inheritdoc />
    public override string ToString() => View.ToString();
}
