using DeepKernels.Cuda;

namespace DeepKernels.Diagnostics.Profiling;

/// <summary>Answers "how many blocks of this kernel fit on one SM" from a live device.</summary>
public interface IDeviceOccupancy
{
    /// <summary>The device's compute capability (90 for sm_90): the profile's entries for this arch use the device's answer.</summary>
    int ComputeCapability { get; }

    /// <summary>Resident blocks per SM at <paramref name="blockSize"/> threads and <paramref name="dynamicSharedBytes"/> of dynamic shared memory.</summary>
    int MaxActiveBlocks(string kernel, int blockSize, int dynamicSharedBytes);
}

/// <summary>
/// <see cref="IDeviceOccupancy"/> over an <see cref="ICudaDriver"/>: the fatbin is loaded into the
/// device's primary context and each kernel is asked through
/// cuOccupancyMaxActiveBlocksPerMultiprocessor (after opting it into its dynamic shared memory,
/// as the backend does before launching). Dispose unloads the module and releases the context.
/// </summary>
public sealed class DriverOccupancy : IDeviceOccupancy, IDisposable
{
    /// <summary>The dynamic shared memory a kernel may use without opting in.</summary>
    private const int DefaultDynamicSharedLimit = 48 * 1024;

    private readonly ICudaDriver _driver;
    private readonly nint _context;
    private readonly nint _module;
    private readonly int _ordinal;
    private bool _disposed;

    private DriverOccupancy(ICudaDriver driver, int ordinal, nint context, nint module, int computeCapability)
    {
        _driver = driver;
        _ordinal = ordinal;
        _context = context;
        _module = module;
        ComputeCapability = computeCapability;
    }

    /// <inheritdoc />
    public int ComputeCapability { get; }

    /// <summary>
    /// Opens device <paramref name="ordinal"/> and loads <paramref name="fatbin"/>; null (with the
    /// reason) when the driver is not ready or the image does not load there. Never throws for a
    /// missing device.
    /// </summary>
    public static DriverOccupancy? TryOpen(ICudaDriver driver, ReadOnlySpan<byte> fatbin, out string reason, int ordinal = 0)
    {
        ArgumentNullException.ThrowIfNull(driver);
        var probe = driver.Probe();
        if (!probe.IsReady || probe.Devices.Count <= ordinal)
        {
            reason = $"no ready CUDA device ({probe.Status}: {probe.Reason})";
            return null;
        }
        nint context = 0;
        try
        {
            var device = driver.GetDeviceInfo(ordinal);
            context = driver.RetainPrimaryContext(ordinal);
            driver.SetCurrentContext(context);
            nint module = driver.LoadModule(fatbin);
            reason = "";
            return new DriverOccupancy(driver, ordinal, context, module, device.ComputeCapability);
        }
        catch (CudaException e)
        {
            if (context != 0) driver.ReleasePrimaryContext(ordinal);
            reason = $"the fatbin does not load on device {ordinal}: {e.Message}";
            return null;
        }
    }

    /// <inheritdoc />
    public int MaxActiveBlocks(string kernel, int blockSize, int dynamicSharedBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(kernel);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Guard.NonNegative(dynamicSharedBytes, nameof(dynamicSharedBytes));
        _driver.SetCurrentContext(_context);
        nint function = _driver.GetFunction(_module, kernel);
        if (dynamicSharedBytes > DefaultDynamicSharedLimit)
            _driver.SetFunctionAttribute(function, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, dynamicSharedBytes);
        return _driver.MaxActiveBlocksPerMultiprocessor(function, blockSize, (nuint)dynamicSharedBytes);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _driver.SetCurrentContext(_context);
        _driver.UnloadModule(_module);
        _driver.ReleasePrimaryContext(_ordinal);
    }
}
