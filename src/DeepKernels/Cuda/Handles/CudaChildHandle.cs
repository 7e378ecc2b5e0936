using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Handles;

/// <summary>
/// A CUDA resource that lives in a context (memory, module, stream, event). It holds a reference
/// on the context (and optionally on a stream it frees on), makes the context current before it
/// releases, and swallows driver errors at release: releasing twice is a no-op, and releasing
/// after the driver is gone must not crash a finalizer.
/// </summary>
public abstract class CudaChildHandle : SafeHandle
{
    private readonly SafeHandle? _secondParent;
    private volatile bool _created;

    /// <summary>Takes references on <paramref name="context"/> (and <paramref name="secondParent"/>).</summary>
    protected CudaChildHandle(CudaPrimaryContextHandle context, SafeHandle? secondParent = null) : base(0, ownsHandle: true)
    {
        ArgumentNullException.ThrowIfNull(context);
        bool added = false;
        context.DangerousAddRef(ref added);
        Context = context;
        if (secondParent is not null)
        {
            bool added2 = false;
            try
            {
                secondParent.DangerousAddRef(ref added2);
            }
            catch
            {
                context.DangerousRelease();
                throw;
            }
            _secondParent = secondParent;
        }
    }

    /// <summary>The context this resource lives in.</summary>
    public CudaPrimaryContextHandle Context { get; }

    /// <summary>The driver.</summary>
    protected ICudaDriver Driver => Context.Driver;

    // Validity is "created", not "non-zero": an emulated stream or event may legitimately be 0.
    /// <inheritdoc />
    public override bool IsInvalid => !_created;

    /// <summary>Stores the native value once the resource exists.</summary>
    protected void Initialize(nint value)
    {
        SetHandle(value);
        _created = true;
    }

    /// <summary>
    /// Makes the context current and stores the resource <paramref name="create"/> returns; if it
    /// throws (bad argument, driver error, out of memory), the references taken by the constructor
    /// are released and the exception propagates.
    /// </summary>
    protected void Create(Func<ICudaDriver, nint> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        try
        {
            Context.MakeCurrent();
            Initialize(create(Driver));
        }
        catch
        {
            AbandonParents();
            throw;
        }
    }

    /// <summary>Frees the native resource; the context is current.</summary>
    protected abstract void Free(nint value);

    /// <inheritdoc />
    protected sealed override bool ReleaseHandle()
    {
        try
        {
            Driver.SetCurrentContext(Context.DangerousGetHandle());
            Free(handle);
        }
        catch (Exception)
        {
            // Driver deinitialised or context lost: the resource went with it.
        }
        finally
        {
            _secondParent?.DangerousRelease();
            Context.DangerousRelease();
        }
        return true;
    }

    /// <summary>Releases the references taken in the constructor when the resource could not be created.</summary>
    protected void AbandonParents()
    {
        _secondParent?.DangerousRelease();
        Context.DangerousRelease();
        SetHandleAsInvalid();
        GC.SuppressFinalize(this);
    }
}
