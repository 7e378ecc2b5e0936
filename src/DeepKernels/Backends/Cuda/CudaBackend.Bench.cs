using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : ICudaBenchSource
{
    /// <inheritdoc />
    public CudaBenchTarget GetBenchTarget()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return new CudaBenchTarget(Driver, Stream, Device);
    }
}
