using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Handles;

/// <summary>
/// A retained primary context of one device (cuDevicePrimaryCtxRetain). Every other CUDA handle
/// holds a reference on it, so the context is released only after the last of them, whatever
/// the order of disposal or finalization.
/// </summary>
public sealed class CudaPrimaryContextHandle : SafeHandle
{
    /// <summary>Retains the primary context of device <paramref name="ordinal"/> and makes it current.</summary>
    public CudaPrimaryContextHandle(ICudaDriver driver, int ordinal) : base(0, ownsHandle: true)
    {
        ArgumentNullException.ThrowIfNull(driver);
        Driver = driver;
        Ordinal = ordinal;
        SetHandle(driver.RetainPrimaryContext(ordinal));
    }

    /// <summary>The driver that owns the context.</summary>
    public ICudaDriver Driver { get; }

    /// <summary>The device ordinal.</summary>
    public int Ordinal { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == 0;

    /// <summary>Makes the context current on the calling thread.</summary>
    public void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(IsClosed, this);
        Driver.SetCurrentContext(handle);
    }

    /// <inheritdoc />
    protected override bool ReleaseHandle()
    {
        try
        {
            Driver.ReleasePrimaryContext(Ordinal);
        }
        catch (Exception)
        {
            // The driver may already be shutting down (process exit); nothing is left to release.
        }
        return true;
    }
}
