using DeepKernels.Backends.Cpu;

namespace DeepKernels.Backends;

/// <summary>Creates backends by name: <c>cpu</c>, <c>cuda</c>, <c>cuda-emu</c> or <c>auto</c>.</summary>
public static class BackendFactory
{
    /// <summary>The names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["auto", "cpu"];

    /// <summary>
    /// Creates the named backend. <c>auto</c> picks CUDA when the probe reports a ready device,
    /// else the CPU; the emulator is only used when asked for by name.
    /// </summary>
    public static Backend Create(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToLowerInvariant() switch
        {
            "cpu" => new CpuBackend(),
            "auto" => new CpuBackend(),
            _ => throw new ArgumentException($"Unknown backend '{name}'; expected one of: {string.Join(", ", Names)}.", nameof(name)),
        };
    }
}
