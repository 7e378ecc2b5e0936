using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace DeepKernels.Cuda.Emulation;

/// <summary>
/// Finds and loads libdeepkernels_emu.so, the kernel sources compiled for the CPU (native/emu).
/// The LibraryImports in <see cref="EmulatorNative"/> name the logical library <see cref="Name"/>,
/// which no default probing finds; the load context's fallback event maps it to the handle
/// loaded here, so the explicit environment override always wins.
/// </summary>
internal static class EmulatorLibrary
{
    /// <summary>The logical name used by the LibraryImports.</summary>
    public const string Name = "deepkernels-kernel-emulator";

    /// <summary>The file the native build writes (build/native/emu/).</summary>
    public const string FileName = "libdeepkernels_emu.so";

    /// <summary>Environment variable with an explicit path to the emulator library.</summary>
    public const string EnvironmentVariable = "DEEPKERNELS_EMULATOR_LIBRARY";

    private static readonly object Gate = new();
    private static nint _handle;
    private static string? _path;
    private static bool _hooked;

    /// <summary>The path loaded, or null before a successful <see cref="TryLoad"/>.</summary>
    public static string? LoadedPath => _path;

    /// <summary>Loads the library once; later calls return the first result.</summary>
    public static bool TryLoad(out string reason)
    {
        lock (Gate)
        {
            if (_handle != 0)
            {
                reason = "";
                return true;
            }
            if (!OperatingSystem.IsLinux())
            {
                reason = "the kernel emulator is built for Linux only";
                return false;
            }
            var candidates = Candidates(out string? explicitPath);
            if (explicitPath is not null && !File.Exists(explicitPath))
            {
                reason = $"{EnvironmentVariable} points to '{explicitPath}', which does not exist";
                return false;
            }
            var errors = new List<string>();
            foreach (string path in candidates)
            {
                if (!File.Exists(path)) continue;
                try
                {
                    _handle = NativeLibrary.Load(path);
                    _path = path;
                    if (!_hooked)
                    {
                        AssemblyLoadContext.Default.ResolvingUnmanagedDll += Resolve;
                        _hooked = true;
                    }
                    reason = "";
                    return true;
                }
                catch (DllNotFoundException e)
                {
                    errors.Add($"{path}: {e.Message}");
                }
                catch (BadImageFormatException e)
                {
                    errors.Add($"{path}: {e.Message}");
                }
            }
            reason = errors.Count > 0
                ? $"the kernel emulator library failed to load: {string.Join("; ", errors)}"
                : $"the kernel emulator library ({FileName}) was not found next to the assembly or under build/native/emu " +
                  $"(build it with ./build.sh build, or set {EnvironmentVariable})";
            return false;
        }
    }

    /// <summary>Where the library is looked for, in order.</summary>
    internal static List<string> Candidates(out string? explicitPath)
    {
        explicitPath = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(explicitPath)) return [Path.GetFullPath(explicitPath)];
        explicitPath = null;
        var list = new List<string>();
        void Add(string? dir)
        {
            if (string.IsNullOrEmpty(dir)) return;
            string p = Path.Combine(dir, FileName);
            if (!list.Contains(p)) list.Add(p);
        }
        Add(AppContext.BaseDirectory);
        Add(Path.GetDirectoryName(typeof(EmulatorLibrary).Assembly.Location));
        // A development checkout: walk up to the repository's build/native/emu.
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            Add(Path.Combine(dir.FullName, "build", "native", "emu"));
        return list;
    }

    private static nint Resolve(Assembly assembly, string libraryName) =>
        libraryName == Name && assembly == typeof(EmulatorLibrary).Assembly ? _handle : 0;
}
