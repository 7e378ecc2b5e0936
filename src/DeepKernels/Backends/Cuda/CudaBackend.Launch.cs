using System.Runtime.InteropServices;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>A kernel looked up once: its handle, static resources and the dynamic shared memory it was opted into.</summary>
    private sealed class KernelFunction(nint handle, int staticSharedBytes, int maxThreadsPerBlock)
    {
        public nint Handle { get; } = handle;
        public int StaticSharedBytes { get; } = staticSharedBytes;
        public int MaxThreadsPerBlock { get; } = maxThreadsPerBlock;
        public int OptedInDynamicShared { get; set; } = DefaultDynamicSharedLimit;
    }

    /// <summary>
    /// Launches an <c>extern "C"</c> kernel on this backend's stream.
    /// </summary>
    internal void LaunchKernel(string name, Dim3 grid, Dim3 block, uint dynamicSharedBytes, params ReadOnlySpan<KernelArg> arguments) =>
        LaunchKernel(name, grid, block, dynamicSharedBytes, new Dim3(1), arguments);

    /// <summary>
    /// Launches a kernel after checking, before any native call, the arguments against the
    /// build's signature table (count, sizes, kinds), the grid and block extents (at most
    /// <see cref="MaxThreadsPerBlock"/> threads) and the dynamic shared memory (at most the
    /// device's opt-in limit; kernels are opted in above 48 KiB once). Then, with the kernel
    /// looked up (and cached), its static shared memory and per-kernel thread limit are checked
    /// too. Violations are <see cref="ArgumentException"/>s naming the kernel.
    /// </summary>
    internal unsafe void LaunchKernel(string name, Dim3 grid, Dim3 block, uint dynamicSharedBytes, Dim3 cluster, ReadOnlySpan<KernelArg> arguments)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var signatures = _image.Signatures ?? throw new InvalidOperationException(
            $"Cannot launch '{name}': no kernel signature table is available ({_image.Problem ?? "the native build did not produce kernel-signatures.json"}).");
        signatures.Validate(name, arguments);
        CheckLaunchShape(name, grid, block, dynamicSharedBytes, cluster, Device.MaxSharedMemoryPerBlockOptin);

        var function = GetKernel(name);
        if (block.Volume > (ulong)function.MaxThreadsPerBlock)
            throw new ArgumentException($"Kernel '{name}': block {block} has {block.Volume} threads, but this kernel allows at most {function.MaxThreadsPerBlock} (its register use limits it).", nameof(block));
        long totalShared = (long)dynamicSharedBytes + function.StaticSharedBytes;
        if (dynamicSharedBytes > DefaultDynamicSharedLimit && totalShared > Device.MaxSharedMemoryPerBlockOptin)
            throw new ArgumentException($"Kernel '{name}': {dynamicSharedBytes} bytes of dynamic plus {function.StaticSharedBytes} of static shared memory exceed the device's opt-in limit of {Device.MaxSharedMemoryPerBlockOptin} bytes.", nameof(dynamicSharedBytes));
        _context.MakeCurrent();
        if (dynamicSharedBytes > function.OptedInDynamicShared)
        {
            Driver.SetFunctionAttribute(function.Handle, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, (int)dynamicSharedBytes);
            function.OptedInDynamicShared = (int)dynamicSharedBytes;
        }

        int n = arguments.Length;
        ulong* slots = stackalloc ulong[Math.Max(n, 1)];
        void** pointers = stackalloc void*[Math.Max(n, 1)];
        var pins = new GCHandle[n];
        try
        {
            for (int i = 0; i < n; i++)
            {
                var a = arguments[i];
                if (a.Kind == KernelArgKind.Bytes)
                {
                    pins[i] = GCHandle.Alloc(a.Bytes!, GCHandleType.Pinned);
                    pointers[i] = (void*)pins[i].AddrOfPinnedObject();
                }
                else
                {
                    slots[i] = a.Value; // little endian: a 4-byte argument is the low half of its slot
                    pointers[i] = &slots[i];
                }
            }
            Driver.LaunchKernel(function.Handle, grid, block, dynamicSharedBytes, Stream, pointers, cluster);
        }
        finally
        {
            foreach (var pin in pins)
            {
                if (pin.IsAllocated) pin.Free();
            }
        }
    }

    /// <summary>The device-independent launch checks, shared with tests.</summary>
    internal static void CheckLaunchShape(string name, Dim3 grid, Dim3 block, uint dynamicSharedBytes, Dim3 cluster, int sharedOptinLimit)
    {
        if (grid.X == 0 || grid.Y == 0 || grid.Z == 0 || grid.X > int.MaxValue || grid.Y > 65535 || grid.Z > 65535)
            throw new ArgumentException($"Kernel '{name}': grid {grid} is out of range (x in 1..2^31-1, y and z in 1..65535).", nameof(grid));
        if (block.X == 0 || block.Y == 0 || block.Z == 0 || block.Z > 64 || block.Volume > MaxThreadsPerBlock)
            throw new ArgumentException($"Kernel '{name}': block {block} has {block.Volume} threads; expected 1..{MaxThreadsPerBlock} threads (z <= 64).", nameof(block));
        if (cluster.X == 0 || cluster.Y == 0 || cluster.Z == 0 || grid.X % cluster.X != 0 || grid.Y % cluster.Y != 0 || grid.Z % cluster.Z != 0)
            throw new ArgumentException($"Kernel '{name}': cluster {cluster} must be non-zero and divide grid {grid}.", nameof(cluster));
        if (dynamicSharedBytes > DefaultDynamicSharedLimit && dynamicSharedBytes > sharedOptinLimit)
            throw new ArgumentException($"Kernel '{name}': {dynamicSharedBytes} bytes of dynamic shared memory exceed the device's opt-in limit of {sharedOptinLimit} bytes.", nameof(dynamicSharedBytes));
    }

    /// <summary>
    /// Resident blocks per SM for <paramref name="kernel"/> at <paramref name="blockSize"/> threads
    /// and <paramref name="dynamicSharedBytes"/> of dynamic shared memory (cuOccupancyMaxActiveBlocksPerMultiprocessor).
    /// </summary>
    public int MaxActiveBlocksPerMultiprocessor(string kernel, int blockSize, uint dynamicSharedBytes = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(kernel);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (blockSize is < 1 or > MaxThreadsPerBlock)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, $"Expected 1..{MaxThreadsPerBlock} threads per block.");
        var function = GetKernel(kernel);
        _context.MakeCurrent();
        return Driver.MaxActiveBlocksPerMultiprocessor(function.Handle, blockSize, dynamicSharedBytes);
    }

    private KernelFunction GetKernel(string name)
    {
        if (_functions.TryGetValue(name, out var cached)) return cached;
        _context.MakeCurrent();
        nint handle = Driver.GetFunction(_module.DangerousGetHandle(), name);
        int staticShared = TryAttribute(handle, CudaFunctionAttribute.SharedSizeBytes, 0);
        int maxThreads = TryAttribute(handle, CudaFunctionAttribute.MaxThreadsPerBlock, MaxThreadsPerBlock);
        return _functions.GetOrAdd(name, new KernelFunction(handle, staticShared, maxThreads > 0 ? maxThreads : MaxThreadsPerBlock));
    }

    // The emulator may not model every attribute; a missing one must not block launches.
    private int TryAttribute(nint function, CudaFunctionAttribute attribute, int fallback)
    {
        try
        {
            return Driver.GetFunctionAttribute(function, attribute);
        }
        catch (Exception e) when (e is CudaException or NotSupportedException or NotImplementedException)
        {
            return fallback;
        }
    }
}
