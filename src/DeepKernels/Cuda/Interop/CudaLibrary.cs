using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

/// <summary>
/// Finds and loads the CUDA driver library: libcuda.so.1 then libcuda.so on Linux, nvcuda.dll on
/// Windows. The LibraryImports in <see cref="CudaNative"/> name the logical library
/// <see cref="Name"/>, which the resolver maps to the handle loaded here.
/// </summary>
internal static class CudaLibrary
{
    /// <summary>The logical name used by the LibraryImports.</summary>
    public const string Name = "deepkernels-cuda-driver";

    /// <summary>The names probed, in order, on this OS.</summary>
    public static IReadOnlyList<string> DefaultCandidates { get; } =
        OperatingSystem.IsWindows() ? ["nvcuda.dll"] :
        OperatingSystem.IsMacOS() ? [] :
        ["libcuda.so.1", "libcuda.so"];

    private static readonly Lazy<(nint Handle, string Error)> Default = new(() => Load(DefaultCandidates));

    static CudaLibrary() => NativeLibraryResolver.Register(Name, () => Default.Value.Handle);

    /// <summary>Makes sure the resolver knows <see cref="Name"/> before the first LibraryImport call.</summary>
    public static void EnsureRegistered()
    {
        // The static constructor does the work.
    }

    /// <summary>Whether the default driver library loaded, and why not when it did not.</summary>
    public static bool TryLoadDefault(out string error)
    {
        var (handle, e) = Default.Value;
        error = e;
        return handle != 0;
    }

    /// <summary>
    /// Tries <paramref name="candidates"/> in order. The default candidates share one cached
    /// handle; other lists (the test hook) are loaded and released at once, only to see whether
    /// they exist.
    /// </summary>
    public static bool TryLoad(IReadOnlyList<string> candidates, out string error)
    {
        if (ReferenceEquals(candidates, DefaultCandidates)) return TryLoadDefault(out error);
        var (handle, e) = Load(candidates);
        error = e;
        if (handle == 0) return false;
        NativeLibrary.Free(handle);
        return true;
    }

    private static (nint, string) Load(IReadOnlyList<string> candidates)
    {
        foreach (string name in candidates)
        {
            if (NativeLibrary.TryLoad(name, out nint handle)) return (handle, "");
        }
        return (0, candidates.Count == 0
            ? "no CUDA driver exists for this operating system"
            : $"the CUDA driver library was not found (tried {string.Join(", ", candidates)})");
    }
}
