namespace DeepKernels.Tensors;

/// <summary>Where a tensor's bytes live.</summary>
public enum MemoryLocation : byte
{
    /// <summary>Ordinary (or pinned) host memory, readable by the CPU.</summary>
    Host,
    /// <summary>Device memory of a CUDA backend (or of the kernel emulator).</summary>
    Device,
}
