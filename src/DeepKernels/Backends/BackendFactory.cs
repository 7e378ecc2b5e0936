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
    /// else the CPU; the kernel emulator (<c>cuda-emu</c>) is only used when asked for by name.
    /// <c>cuda</c> and <c>cuda-emu</c> throw <see cref="InvalidOperationException"/> with the
    /// reason when they are unusable.
    /// </summary>
    public static Backend Create(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToLowerInvariant() switch
        {
            "cpu" => new CpuBackend(),
            "cuda" => CudaBackend.Create(RealCudaDriver.Default),
            "auto" => CudaBackend.TryCreate(RealCudaDriver.Default, 0, out var cuda, out _) ? cuda! : new CpuBackend(),
            "cuda-emu" => EmulatorDriver.TryLoad(out var emulator, out string why)
                ? CudaBackend.Create(emulator)
                : throw new InvalidOperationException($"Kernel emulator backend unavailable: {why}."),
            _ => throw new ArgumentException($"Unknown backend '{name}'; expected one of: {string.Join(", ", Names)}.", nameof(name)),
        };
    }
}
