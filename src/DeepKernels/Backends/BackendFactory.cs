using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;

namespace DeepKernels.Backends;

/// <summary>Creates backends by name: <c>cpu</c>, <c>cuda</c>, <c>cuda-emu</c> or <c>auto</c>.</summary>
public static class BackendFactory
{
    /// <summary>The names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["auto", "cpu", "cuda"];

    /// <summary>
    /// Creates the named backend. <c>auto</c> picks CUDA when the probe reports a ready device,
    /// else the CPU; the emulator is only used when asked for by name. <c>cuda</c> throws
    /// <see cref="InvalidOperationException"/> with the probe's reason when no device is usable.
    /// </summary>
    public static Backend Create(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToLowerInvariant() switch
        {
            "cpu" => new CpuBackend(),
            "cuda" => CudaBackend.Create(RealCudaDriver.Default),
            "auto" => CudaBackend.TryCreate(RealCudaDriver.Default, 0, out var cuda, out _) ? cuda! : new CpuBackend(),
            // "cuda-emu" goes here once the kernel emulator's driver (Cuda/Emulation) exists.
            _ => throw new ArgumentException($"Unknown backend '{name}'; expected one of: {string.Join(", ", Names)}.", nameof(name)),
        };
    }
}
