using System.Runtime.InteropServices;
using DeepKernels.Tensors;

namespace DeepKernels.Backends;

/// <summary>
/// Where ops run: the CPU reference backend or a CUDA backend (real driver or kernel emulator).
/// Ops validate their arguments once, above the backend, and then call the backend's
/// implementation of that op (an internal interface per op, implemented in one file per backend).
/// </summary>
public abstract class Backend : IDisposable
{
    /// <summary>Short name used on the command line: cpu, cuda, cuda-emu.</summary>
    public abstract string Name { get; }

    /// <summary>Where this backend's tensors live.</summary>
    public abstract MemoryLocation MemoryLocation { get; }

    /// <summary>Whether <see cref="Dispose()"/> has run.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Allocates an uninitialised contiguous tensor in this backend's memory.</summary>
    public TensorBuffer Allocate(DType dtype, params ReadOnlySpan<long> shape)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(shape), d, "Expected every dimension >= 0.");
            count = checked(count * d);
        }
        long bytes = checked(count * dtype.SizeInBytes());
        SafeHandle storage = AllocateBytes(bytes);
        var view = new TensorView(storage.DangerousGetHandle(), dtype, MemoryLocation, shape);
        return new TensorBuffer(this, storage, view);
    }

    /// <summary>Allocates a tensor and fills it from host data of the same byte size.</summary>
    public TensorBuffer Upload<T>(ReadOnlySpan<T> source, DType dtype, params ReadOnlySpan<long> shape) where T : unmanaged
    {
        var buffer = Allocate(dtype, shape);
        try
        {
            CopyFromHost(MemoryMarshal.AsBytes(source), buffer.View);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Copies a contiguous tensor into a new host array.</summary>
    public T[] Download<T>(TensorView source) where T : unmanaged
    {
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        if (source.ByteCount % size != 0)
            throw new ArgumentException($"Expected a byte count divisible by {size} for {typeof(T).Name}, got {source.ByteCount}.", nameof(source));
        var result = new T[source.ByteCount / size];
        CopyToHost(source, MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }

    /// <summary>Copies host bytes into a contiguous tensor of this backend; sizes must match.</summary>
    public void CopyFromHost(ReadOnlySpan<byte> source, TensorView destination)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        CheckOwnContiguous(destination, nameof(destination));
        if (source.Length != destination.ByteCount)
            throw new ArgumentException($"Expected {destination.ByteCount} source bytes for {destination}, got {source.Length}.", nameof(source));
        CopyFromHostCore(source, destination.Data);
    }

    /// <summary>Copies a contiguous tensor of this backend into host bytes; sizes must match.</summary>
    public void CopyToHost(TensorView source, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        CheckOwnContiguous(source, nameof(source));
        if (destination.Length != source.ByteCount)
            throw new ArgumentException($"Expected {source.ByteCount} destination bytes for {source}, got {destination.Length}.", nameof(destination));
        CopyToHostCore(source.Data, destination);
    }

    /// <summary>Sets every byte of a contiguous tensor to zero.</summary>
    public void Zero(TensorView tensor)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        CheckOwnContiguous(tensor, nameof(tensor));
        ZeroCore(tensor.Data, tensor.ByteCount);
    }

    /// <summary>Waits until all work queued on this backend has finished.</summary>
    public virtual void Synchronize()
    {
    }

    /// <summary>Allocates <paramref name="bytes"/> bytes; the handle's value is the address.</summary>
    protected abstract SafeHandle AllocateBytes(long bytes);

    /// <summary>Copies host bytes to an address of this backend.</summary>
    protected abstract void CopyFromHostCore(ReadOnlySpan<byte> source, nint destination);

    /// <summary>Copies from an address of this backend into host bytes.</summary>
    protected abstract void CopyToHostCore(nint source, Span<byte> destination);

    /// <summary>Zeroes bytes at an address of this backend.</summary>
    protected abstract void ZeroCore(nint destination, long bytes);

    private void CheckOwnContiguous(TensorView view, string name)
    {
        if (view.Location != MemoryLocation)
            throw new ArgumentException($"Expected a tensor in {MemoryLocation} memory for backend '{Name}', got {view}.", name);
        if (!view.IsContiguous)
            throw new ArgumentException($"Expected a contiguous tensor, got {view}.", name);
    }

    /// <summary>Releases native resources.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        Dispose(true);
        IsDisposed = true;
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases native resources.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <inheritdoc />
    public override string ToString() => Name;
}
