using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;

namespace DeepKernels.Tests.Packaging;

/// <summary>
/// Packs src/DeepKernels from the already-built output, then restores the package from a local
/// folder feed into a throwaway console project and runs one CPU call through it, so a broken
/// package fails CI.
/// </summary>
[Category("Package")]
[NonParallelizable]
public partial class PackageConsumerTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(3);
    private string _work = "";

    [SetUp]
    public void SetUp()
    {
        _work = Path.Combine(Path.GetTempPath(), "dk-package-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_work);
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            Directory.Delete(_work, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }

    // The same computation the consumer prints, through the project reference.
    internal static string ExpectedOutput()
    {
        var (q, s) = Quantize();
        return $"checksum {Checksum(q)} scales {string.Join(",", s.Select(v => BitConverter.SingleToUInt32Bits(v).ToString("x8")))} fatbin {KernelImage.Current.HasFatbin}";
    }

    private static (Float8E4M3[] Q, float[] S) Quantize()
    {
        var x = new float[300];
        for (int i = 0; i < x.Length; i++) x[i] = MathF.Sin(i * 0.37f) * (i % 7 + 1);
        var q = new Float8E4M3[300];
        var s = new float[3];
        ActivationQuantization.Quantize(x, 300, q, s);
        return (q, s);
    }

    private static ulong Checksum(Float8E4M3[] q)
    {
        ulong sum = 1469598103934665603;
        foreach (var v in q) sum = (sum ^ v.RawValue) * 1099511628211;
        return sum;
    }

    private const string ConsumerProgram = """
        using DeepKernels.Cuda.Kernels;
        using DeepKernels.Formats;
        using DeepKernels.Ops.Quantize;

        var x = new float[300];
        for (int i = 0; i < x.Length; i++) x[i] = MathF.Sin(i * 0.37f) * (i % 7 + 1);
        var q = new Float8E4M3[300];
        var s = new float[3];
        ActivationQuantization.Quantize(x, 300, q, s);
        ulong sum = 1469598103934665603;
        foreach (var v in q) sum = (sum ^ v.RawValue) * 1099511628211;
        Console.WriteLine($"checksum {sum} scales {string.Join(",", s.Select(v => BitConverter.SingleToUInt32Bits(v).ToString("x8")))} fatbin {KernelImage.Current.HasFatbin}");
        """;

    [Test]
    [CancelAfter(200_000)]
    public void PackageRestoresIntoAConsumerAndRuns()
    {
        var clock = Stopwatch.StartNew();
        string root = RepositoryRoot();
        string configuration = new DirectoryInfo(TestContext.CurrentContext.TestDirectory).Parent!.Name;
        string feed = Path.Combine(_work, "feed");

        Dotnet(root, clock, "pack", Path.Combine(root, "src", "DeepKernels", "DeepKernels.csproj"),
            "-c", configuration, "--no-build", "-nologo", "-o", feed);
        string nupkg = Directory.GetFiles(feed, "DeepKernels.*.nupkg").Single(f => !f.EndsWith(".snupkg", StringComparison.Ordinal));
        string version = VersionPattern().Match(Path.GetFileName(nupkg)).Groups[1].Value;
        Assert.That(version, Is.Not.Empty, nupkg);
        CheckPackageContents(nupkg);

        string app = Path.Combine(_work, "consumer");
        Directory.CreateDirectory(app);
        // Stop MSBuild from picking up Directory.*.props of any folder above the temp dir.
        File.WriteAllText(Path.Combine(app, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(app, "Directory.Build.targets"), "<Project />");
        File.WriteAllText(Path.Combine(app, "Directory.Packages.props"), "<Project><PropertyGroup><ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally></PropertyGroup></Project>");
        File.WriteAllText(Path.Combine(app, "nuget.config"), NuGetConfig(feed, app, clock));
        // Our package restores into a private folder, so the machine's global cache never holds
        // it; the global cache serves the other packages read-only as a fallback folder.
        string? fallback = GlobalPackagesFolder();
        File.WriteAllText(Path.Combine(app, "Consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <RestorePackagesPath>{Path.Combine(_work, "packages")}</RestorePackagesPath>
                {(fallback is null ? "" : $"<RestoreAdditionalProjectFallbackFolders>{fallback}</RestoreAdditionalProjectFallbackFolders>")}
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="DeepKernels" Version="[{version}]" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), ConsumerProgram);

        string output = Dotnet(app, clock, "run", "-c", "Release", "-nologo");
        Assert.That(output.Trim().Split('\n').Last().Trim(), Is.EqualTo(ExpectedOutput()));
        Assert.That(Directory.Exists(Path.Combine(_work, "packages", "deepkernels", version)), Is.True, "restored from the local feed into the private folder");
    }

    private static void CheckPackageContents(string nupkg)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var names = zip.Entries.Select(e => e.FullName).ToList();
        Assert.That(names, Does.Contain("lib/net10.0/DeepKernels.dll"));
        Assert.That(names, Does.Contain("lib/net10.0/DeepKernels.xml"), "XML docs");
        Assert.That(names, Does.Contain("README.md"));
        Assert.That(names.Any(n => n.Contains("emu", StringComparison.OrdinalIgnoreCase)), Is.False, "the emulator is never packed");
        var nuspecEntry = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
        using var stream = nuspecEntry.Open();
        var nuspec = XDocument.Load(stream);
        XNamespace ns = nuspec.Root!.Name.Namespace;
        var metadata = nuspec.Root.Element(ns + "metadata")!;
        var license = metadata.Element(ns + "license");
        Assert.That(license?.Attribute("type")?.Value, Is.EqualTo("expression"));
        Assert.That(license?.Value, Is.EqualTo("MIT"));
        Assert.That(metadata.Element(ns + "readme")?.Value, Is.EqualTo("README.md"));
        Assert.That(metadata.Element(ns + "description")?.Value, Is.Not.Empty);
        Assert.That(metadata.Element(ns + "repository"), Is.Not.Null, "SourceLink repository metadata");
        var deps = metadata.Descendants(ns + "dependency").Select(d => d.Attribute("id")?.Value).ToList();
        Assert.That(deps, Does.Contain("System.Numerics.Tensors"));
        Assert.That(deps, Does.Not.Contain("Microsoft.SourceLink.GitHub"), "build-only dependency leaked into the package");
    }

    private static string NuGetConfig(string feed, string directory, Stopwatch clock)
    {
        // Keep every source the machine already uses (mirror or nuget.org), plus the local feed,
        // and map our package id to the feed only so no other source can serve it.
        string listed = Dotnet(directory, clock, "nuget", "list", "source", "--format", "short");
        var sources = listed.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("E ", StringComparison.Ordinal))
            .Select(l => l[2..].Trim()).Where(s => s.Length > 0).Distinct().ToList();
        var sb = new StringBuilder();
        sb.AppendLine("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
        sb.AppendLine("<configuration>");
        sb.AppendLine("  <packageSources>");
        sb.AppendLine("    <clear />");
        sb.AppendLine($"    <add key=\"deepkernels-local\" value=\"{feed}\" />");
        for (int i = 0; i < sources.Count; i++) sb.AppendLine($"    <add key=\"source{i}\" value=\"{System.Security.SecurityElement.Escape(sources[i])}\" />");
        sb.AppendLine("  </packageSources>");
        sb.AppendLine("  <packageSourceMapping>");
        sb.AppendLine("    <packageSource key=\"deepkernels-local\"><package pattern=\"DeepKernels\" /></packageSource>");
        for (int i = 0; i < sources.Count; i++) sb.AppendLine($"    <packageSource key=\"source{i}\"><package pattern=\"*\" /></packageSource>");
        sb.AppendLine("  </packageSourceMapping>");
        sb.AppendLine("</configuration>");
        return sb.ToString();
    }

    private static string? GlobalPackagesFolder()
    {
        string? env = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        string path = !string.IsNullOrEmpty(env) ? env : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return Directory.Exists(path) ? path : null;
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Kernels.sln"))) return dir.FullName;
        }
        Assert.Ignore("Kernels.sln not found above the test assembly: the package test needs the source tree.");
        return "";
    }

    private static string Dotnet(string directory, Stopwatch clock, params string[] args)
    {
        var remaining = Budget - clock.Elapsed;
        if (remaining <= TimeSpan.Zero) Assert.Fail($"Package test ran out of its {Budget.TotalMinutes} min budget before 'dotnet {string.Join(' ', args)}'.");
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        // The test host's MSBuild/VSTest variables must not leak into the child builds.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(remaining))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"'dotnet {string.Join(' ', args)}' did not finish within the package test's budget.");
        }
        process.WaitForExit();
        string output = stdout.Result + stderr.Result;
        if (process.ExitCode != 0) Assert.Fail($"'dotnet {string.Join(' ', args)}' in {directory} exited with {process.ExitCode}:\n{output}");
        return stdout.Result;
    }

    [GeneratedRegex(@"^DeepKernels\.(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)\.nupkg$")]
    private static partial Regex VersionPattern();
}
