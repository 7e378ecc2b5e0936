using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;

namespace DeepKernels.Backends;

/// <summary>Creates backends by name: <c>cpu</c>, <c>cuda</c>, <c>cuda-emu</c> or <c>auto</c>.</summary>
public static class BackendFactory
{
    /// <summary>The names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["auto", "cpu", "cuda", "cuda-emu"];

    /// <summary>
    /// Creates the named backend. <c>auto</c> picks CUDA when the probe reports a ready device,
    /// else the CPU; the emulator is only used when asked for by name. <c>cuda</c> throws
    /// <see cref="InvalidOperationException"/> with the probe's reason when no device is usable;
    /// <c>cuda-emu</c> (the CUDA backend over the kernel emulator, see
    /// <see cref="EmulatorDriver"/>) throws it when the emulator library was not built.
    /// </summary>
    public static Backend Create(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToLowerInvariant() switch
        {
            "cpu" => new CpuBackend(),
            "cuda" => CudaBackend.Create(RealCudaDriver.Default),
            "auto" => CudaBackend.TryCreate(RealCudaDriver.Default, 0, out var cuda, out _) ? cuda! : new CpuBackend(),
            "cuda-emu" => CreateEmulated(),
            _ => throw new ArgumentException($"Unknown backend '{name}'; expected one of: {string.Join(", ", Names)}.", nameof(name)),
        };
    }

    private static Backend CreateEmulated() =>
        EmulatorDriver.TryLoad(out var driver, out string reason)
            ? CudaBackend.Create(driver)
            : throw new InvalidOperationException($"CUDA emulator backend unavailable: {reason}");
}
