using System.Runtime.InteropServices;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// Loads the kernel emulator once per fixture (skipping with the loader's reason when the native
/// build did not produce it) and offers small upload/download/launch helpers over
/// <see cref="EmulatorDriver"/> directly.
/// </summary>
public abstract class EmulatorTestBase
{
    private readonly List<ulong> _allocations = [];

    protected EmulatorDriver Driver { get; private set; } = null!;

    protected nint Module { get; private set; }

    [OneTimeSetUp]
    public void LoadEmulator()
    {
        if (!EmulatorDriver.TryLoad(out var driver, out string reason)) Assert.Ignore($"kernel emulator not available: {reason}");
        Driver = driver!;
        Module = Driver.LoadModule([]);
    }

    [TearDown]
    public void FreeAllocations()
    {
        foreach (ulong p in _allocations) Driver.Free(p);
        _allocations.Clear();
    }

    protected ulong Alloc(long bytes)
    {
        ulong p = Driver.Allocate((nuint)bytes);
        _allocations.Add(p);
        return p;
    }

    protected unsafe ulong Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        ulong p = Alloc(Math.Max(1, data.Length * sizeof(T)));
        fixed (T* src = data) Driver.CopyHostToDevice(p, (nint)src, (nuint)(data.Length * sizeof(T)), 0);
        return p;
    }

    protected unsafe T[] Download<T>(ulong pointer, int count) where T : unmanaged
    {
        var result = new T[count];
        fixed (T* dst = result) Driver.CopyDeviceToHost((nint)dst, pointer, (nuint)(count * sizeof(T)), 0);
        return result;
    }

    protected nint Function(string name) => Driver.GetFunction(Module, name);

    /// <summary>Launches <paramref name="kernel"/> with checked argument sizes.</summary>
    protected void Launch(string kernel, Dim3 grid, Dim3 block, KernelArgs args, uint dynamicSharedBytes = 0) =>
        args.Launch(Driver, Function(kernel), grid, block, dynamicSharedBytes);

    /// <summary>Element-wise equality of large arrays with one assertion, naming the first mismatch.</summary>
    protected static void AssertSame<T>(T[] actual, T[] expected, string what) where T : IEquatable<T>
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        for (int i = 0; i < actual.Length; i++)
            if (!actual[i].Equals(expected[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]}, expected {expected[i]}");
    }

    /// <summary>Runs <paramref name="launch"/> and returns the CudaException it must throw.</summary>
    protected static CudaException ExpectFailure(Action launch)
    {
        try
        {
            launch();
        }
        catch (CudaException e)
        {
            return e;
        }
        Assert.Fail("expected the launch to fail");
        throw new InvalidOperationException();
    }
}

/// <summary>Kernel arguments packed as cuLaunchKernel expects: one pointer per parameter.</summary>
public sealed class KernelArgs
{
    private readonly byte[] _data = new byte[512];
    private readonly List<(int Offset, int Size)> _slots = [];
    private int _used;

    public KernelArgs Ptr(ulong value) => Add(value);

    public KernelArgs Int(int value) => Add(value);

    public KernelArgs Long(long value) => Add(value);

    public KernelArgs Float(float value) => Add(value);

    /// <summary>A by-value blob such as a 128-byte CUtensorMap (64-byte aligned in the pack).</summary>
    public KernelArgs Blob(byte[] value)
    {
        _used = (_used + 63) & ~63;
        value.CopyTo(_data, _used);
        _slots.Add((_used, value.Length));
        _used += value.Length;
        return this;
    }

    private KernelArgs Add<T>(T value) where T : unmanaged
    {
        int size = Marshal.SizeOf<T>();
        _used = (_used + 7) & ~7;
        MemoryMarshal.Write(_data.AsSpan(_used, size), in value);
        _slots.Add((_used, size));
        _used += size;
        return this;
    }

    public unsafe void Launch(EmulatorDriver driver, nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes)
    {
        var sizes = new ulong[_slots.Count];
        void** pointers = stackalloc void*[Math.Max(1, _slots.Count)];
        fixed (byte* data = _data)
        {
            for (int i = 0; i < _slots.Count; i++)
            {
                pointers[i] = data + _slots[i].Offset;
                sizes[i] = (ulong)_slots[i].Size;
            }
            driver.LaunchKernel(function, grid, block, dynamicSharedBytes, 0, pointers, sizes);
        }
    }

    /// <summary>Launches through the plain <see cref="ICudaDriver"/> entry point (no size checks).</summary>
    public unsafe void LaunchUnchecked(ICudaDriver driver, nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes = 0)
    {
        void** pointers = stackalloc void*[Math.Max(1, _slots.Count)];
        fixed (byte* data = _data)
        {
            for (int i = 0; i < _slots.Count; i++) pointers[i] = data + _slots[i].Offset;
            driver.LaunchKernel(function, grid, block, dynamicSharedBytes, 0, pointers, new Dim3(1));
        }
    }
}
