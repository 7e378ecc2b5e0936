using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using System.Text.Json.Serialization;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Cuda.Kernels;

namespace DeepKernels.Diagnostics;

/// <summary>The .NET runtime this process runs on.</summary>
/// <param name="Framework">e.g. ".NET 10.0.0".</param>
/// <param name="RuntimeIdentifier">e.g. "linux-x64".</param>
/// <param name="OperatingSystem">The OS description.</param>
/// <param name="ProcessArchitecture">X64, Arm64, ...</param>
public sealed record RuntimeSection(string Framework, string RuntimeIdentifier, string OperatingSystem, string ProcessArchitecture);

/// <summary>The CPU model and the SIMD features the kernels use.</summary>
/// <param name="Model">"model name" from /proc/cpuinfo on Linux, else what the OS says, else "unknown".</param>
/// <param name="LogicalCores">Logical processors available to this process.</param>
/// <param name="Features">Feature name to availability: AVX2, FMA, AVX-512F, AVX-512BW, AVX-512VL, AVX-VNNI, AdvSimd.</param>
public sealed record CpuSection(string Model, int LogicalCores, IReadOnlyDictionary<string, bool> Features);

/// <summary>One CUDA device as <c>info</c> shows it.</summary>
/// <param name="Ordinal">Device index.</param>
/// <param name="Name">Device name.</param>
/// <param name="ComputeCapability">"9.0".</param>
/// <param name="Multiprocessors">SM count.</param>
/// <param name="MemoryBytes">Global memory in bytes.</param>
/// <param name="SharedMemoryOptinBytes">Opt-in shared memory per block in bytes.</param>
public sealed record DeviceSection(int Ordinal, string Name, string ComputeCapability, int Multiprocessors, long MemoryBytes, int SharedMemoryOptinBytes);

/// <summary>The CUDA probe's result.</summary>
/// <param name="Status">The probe status.</param>
/// <param name="Reason">The one-line reason.</param>
/// <param name="DriverVersion">"12.4", or null when unknown.</param>
/// <param name="Devices">The devices found.</param>
public sealed record CudaSection(CudaStatus Status, string Reason, string? DriverVersion, IReadOnlyList<DeviceSection> Devices);

/// <summary>One kernel and the archs it was built for.</summary>
/// <param name="Name">Kernel name.</param>
/// <param name="Archs">Archs with an entry in the resource report.</param>
public sealed record KernelSection(string Name, IReadOnlyList<string> Archs);

/// <summary>The kernels in the fatbin, from the build's resource report.</summary>
/// <param name="Built">Whether a fatbin is present.</param>
/// <param name="Source">"embedded", a path, or "none".</param>
/// <param name="Compiler">The compiler that built it, or null.</param>
/// <param name="Archs">The archs in the fatbin.</param>
/// <param name="Kernels">The kernels.</param>
/// <param name="Note">Why kernels are missing or the report is unreadable, or null.</param>
public sealed record KernelsSection(bool Built, string Source, string? Compiler, IReadOnlyList<string> Archs, IReadOnlyList<KernelSection> Kernels, string? Note);

/// <summary>A backend and whether it can be created here.</summary>
/// <param name="Name">The backend name for <c>--backend</c>.</param>
/// <param name="Available">Whether it can be created.</param>
/// <param name="Reason">Why (not).</param>
public sealed record BackendSection(string Name, bool Available, string Reason);

/// <summary>
/// What <c>deepkernels info</c> prints: the runtime, CPU and SIMD features, the CUDA probe and
/// devices, the kernels built, and the backends usable here. Collecting never throws for a
/// missing driver or missing kernels; those are states, reported.
/// </summary>
/// <param name="Runtime">Runtime section.</param>
/// <param name="Cpu">CPU section.</param>
/// <param name="Cuda">CUDA probe section.</param>
/// <param name="Kernels">Kernels section.</param>
/// <param name="Backends">Backends section.</param>
public sealed record SystemReport(RuntimeSection Runtime, CpuSection Cpu, CudaSection Cuda, KernelsSection Kernels, IReadOnlyList<BackendSection> Backends)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Collects the report using the real driver and this process's kernel image.</summary>
    public static SystemReport Collect() => Collect(RealCudaDriver.Default, KernelImage.Current);

    /// <summary>Collects the report with the given driver and kernel image.</summary>
    public static SystemReport Collect(ICudaDriver driver, KernelImage image)
    {
        ArgumentNullException.ThrowIfNull(driver);
        ArgumentNullException.ThrowIfNull(image);
        var runtime = new RuntimeSection(RuntimeInformation.FrameworkDescription, RuntimeInformation.RuntimeIdentifier,
            RuntimeInformation.OSDescription, RuntimeInformation.ProcessArchitecture.ToString());
        var cpu = new CpuSection(CpuModel(), Environment.ProcessorCount, CpuFeatures());
        var probe = driver.Probe();
        var cuda = new CudaSection(probe.Status, probe.Reason, probe.DriverVersion > 0 ? RealCudaDriver.FormatVersion(probe.DriverVersion) : null,
            probe.Devices.Select(d => new DeviceSection(d.Ordinal, d.Name, $"{d.ComputeCapabilityMajor}.{d.ComputeCapabilityMinor}",
                d.MultiprocessorCount, d.TotalMemoryBytes, d.MaxSharedMemoryPerBlockOptin)).ToList());
        var report = image.Report;
        var kernels = new KernelsSection(image.HasFatbin, image.Source, report?.Compiler, report?.Archs ?? [],
            report is null ? [] : report.KernelNames.Select(n => new KernelSection(n, report.ArchsOf(n))).ToList(),
            image.HasFatbin ? image.Problem : $"kernels not built: {image.Problem ?? "no fatbin"}");
        var backends = new List<BackendSection>
        {
            new("cpu", true, $"{Environment.ProcessorCount} threads"),
            new(driver.Name, probe.IsReady, probe.Reason),
        };
        // The kernel emulator runs the same kernels on the CPU when its library was built.
        if (driver.Name != "cuda-emu")
        {
            backends.Add(EmulatorDriver.TryLoad(out var emulator, out string emulatorReason)
                ? new BackendSection("cuda-emu", true, emulator!.Probe().Reason)
                : new BackendSection("cuda-emu", false, emulatorReason));
        }
        return new SystemReport(runtime, cpu, cuda, kernels, backends);
    }

    /// <summary>The report as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Writes the human-readable form.</summary>
    public void WriteText(TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(output);
        output.WriteLine($".NET runtime : {Runtime.Framework} ({Runtime.RuntimeIdentifier}, {Runtime.ProcessArchitecture}) on {Runtime.OperatingSystem}");
        output.WriteLine($"CPU          : {Cpu.Model}, {Cpu.LogicalCores} logical cores");
        output.WriteLine($"SIMD         : {string.Join("  ", Cpu.Features.Select(f => $"{f.Key} {(f.Value ? "yes" : "no")}"))}");
        output.WriteLine($"CUDA         : {Cuda.Status} - {Cuda.Reason}");
        output.WriteLine($"CUDA driver  : {Cuda.DriverVersion ?? "unknown"}");
        if (Cuda.Devices.Count == 0) output.WriteLine("Devices      : none");
        foreach (var d in Cuda.Devices)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Device {d.Ordinal,-5} : {d.Name}, CC {d.ComputeCapability}, {d.Multiprocessors} SMs, {d.MemoryBytes / (double)(1L << 30):F1} GiB, shared memory opt-in {d.SharedMemoryOptinBytes / 1024} KiB"));
        }
        if (!Kernels.Built)
        {
            output.WriteLine($"Kernels      : {Kernels.Note}");
        }
        else
        {
            output.WriteLine($"Kernels      : {Kernels.Source} fatbin, {Kernels.Compiler ?? "unknown compiler"}, archs {(Kernels.Archs.Count == 0 ? "unknown" : string.Join(" ", Kernels.Archs))}");
            if (Kernels.Note is not null) output.WriteLine($"               note: {Kernels.Note}");
            foreach (var k in Kernels.Kernels) output.WriteLine($"  {k.Name,-32} {string.Join(" ", k.Archs)}");
        }
        output.WriteLine($"Backends     : {string.Join("; ", Backends.Select(b => b.Available ? $"{b.Name} (ready)" : $"{b.Name} (unavailable)"))}");
    }

    private static Dictionary<string, bool> CpuFeatures() => new()
    {
        ["AVX2"] = Avx2.IsSupported,
        ["FMA"] = Fma.IsSupported,
        ["AVX-512F"] = Avx512F.IsSupported,
        ["AVX-512BW"] = Avx512BW.IsSupported,
        ["AVX-512VL"] = Avx512F.VL.IsSupported,
        ["AVX-VNNI"] = AvxVnni.IsSupported,
        ["AdvSimd"] = AdvSimd.IsSupported,
    };

    private static string CpuModel()
    {
        try
        {
            if (OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo"))
            {
                foreach (string line in File.ReadLines("/proc/cpuinfo"))
                {
                    int colon = line.IndexOf(':', StringComparison.Ordinal);
                    if (colon < 0) continue;
                    string key = line[..colon].Trim();
                    // x86 says "model name"; many ARM kernels say "Model" or "Hardware".
                    if (key is "model name" or "Model" or "Hardware") return line[(colon + 1)..].Trim();
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Fall through to the environment.
        }
        return Environment.GetEnvironmentVariable("PROCESSOR_IDENTIFIER") ?? "unknown";
    }
}
