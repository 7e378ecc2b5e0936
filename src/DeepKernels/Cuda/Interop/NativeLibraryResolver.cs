using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

/// <summary>
/// The one <see cref="NativeLibrary.SetDllImportResolver"/> of this assembly (the runtime allows
/// only one per assembly). Bindings register a loader per logical library name; names nobody
/// registered fall through to the runtime's default probing.
/// </summary>
internal static class NativeLibraryResolver
{
    private static readonly ConcurrentDictionary<string, Func<nint>> Loaders = new(StringComparer.Ordinal);
    private static int _installed;

    /// <summary>Routes LibraryImports of <paramref name="libraryName"/> to <paramref name="loader"/> (0 = not found).</summary>
    public static void Register(string libraryName, Func<nint> loader)
    {
        Loaders[libraryName] = loader;
        if (Interlocked.Exchange(ref _installed, 1) == 0)
        {
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
            }
            catch (InvalidOperationException)
            {
                // Someone else installed a resolver first; default probing still finds libcuda.so on Linux.
            }
        }
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        Loaders.TryGetValue(libraryName, out var loader) ? loader() : 0;
}
