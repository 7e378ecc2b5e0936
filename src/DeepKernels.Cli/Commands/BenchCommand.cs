using System.Globalization;
using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `deepkernels bench`: times every registered op case (<see cref="OpBenchRegistry"/>) on one
/// backend and reports throughput against the machine's ceilings. CPU: Stopwatch, warm-up,
/// median. CUDA: events, warm-up, L2 flush between repeats, median; peaks from the datasheet
/// table (<see cref="DevicePeaks"/>). Exit codes: 0 ok, 1 a case failed (the rest still ran and
/// are reported), 2 bad usage (unknown op/backend),
/// 3 backend unavailable (the reason is printed, and written to --json when given).
/// The JSON schema is documented in Diagnostics/Benchmarking/BenchReport.cs.
/// </summary>
internal sealed class BenchCommand : ICliCommand
{
    /// <summary>Exit code when at least one case threw (the others are still measured and reported).</summary>
    public const int CaseFailed = 1;

    /// <summary>Exit code when the requested backend cannot be created (no GPU, no driver, kernels not built).</summary>
    public const int BackendUnavailable = 3;

    private static readonly string[] BackendNames = ["cpu", "cuda", "cuda-emu"];

    public string Name => "bench";

    public string Summary => "Time each op at its anchor shapes: --backend cpu|cuda|cuda-emu [--op NAME[,NAME...]] [--case TEXT | --cases-file FILE] [--full] [--smallest] [--budget-s N] [--json FILE] [--repeats N] [--warmup N] [--list].";

    /// <summary>Every case: the library's op cases and the model decode cases.</summary>
    internal static IReadOnlyList<OpBenchCase> Registry { get; } = [.. OpBenchRegistry.All, .. ModelBenchCases.All];

    /// <summary>Op names in registration order.</summary>
    internal static IReadOnlyList<string> OpNames { get; } = Registry.Select(c => c.Op).Distinct(StringComparer.Ordinal).ToList();

    public int Run(CliArguments args, TextWriter output)
    {
        string backendName = args.String("backend", "cpu").ToLowerInvariant();
        string? op = args.String("op");
        string? caseFilter = args.String("case");
        string? casesFile = args.String("cases-file");
        string? jsonPath = args.String("json");
        int repeats = args.Int("repeats", 10, 1, 10_000);
        int warmup = args.Int("warmup", 3, 0, 10_000);
        int budgetSeconds = args.Int("budget-s", 0, 0, 86_400);
        bool list = args.Flag("list");
        bool smallest = args.Flag("smallest");
        bool full = args.Flag("full");
        args.EnsureAllUsed();

        if (!BackendNames.Contains(backendName))
            throw new CliUsageException($"unknown backend '{backendName}'. Valid backends: {string.Join(", ", BackendNames)}.");
        IReadOnlyList<OpBenchCase> selected = Registry;
        if (op is not null)
        {
            // One op, or several separated by commas (the GPU bundle's emulator rehearsal picks cheap ones).
            string[] ops = op.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            string? unknown = ops.Length == 0 ? op : ops.FirstOrDefault(o => !OpNames.Contains(o, StringComparer.OrdinalIgnoreCase));
            if (unknown is not null)
                throw new CliUsageException($"unknown op '{unknown}'. Valid ops: {string.Join(", ", OpNames)}.");
            selected = Registry.Where(c => ops.Contains(c.Op, StringComparer.OrdinalIgnoreCase)).ToList();
        }
        selected = selected.Where(c => c.RunsOn(backendName) && (full || !c.FullGridOnly)).ToList();
        if (caseFilter is not null && casesFile is not null)
            throw new CliUsageException("--case and --cases-file exclude each other.");
        if (casesFile is not null) selected = FromCasesFile(casesFile, selected);
        if (caseFilter is not null)
        {
            var all = selected;
            // An exact name wins (the GPU bundle runs single cases by name); otherwise a substring.
            selected = all.Where(c => string.Equals(c.Name, caseFilter, StringComparison.OrdinalIgnoreCase)).ToList();
            if (selected.Count == 0) selected = all.Where(c => c.Name.Contains(caseFilter, StringComparison.OrdinalIgnoreCase)).ToList();
            if (selected.Count == 0)
                throw new CliUsageException($"no case matches '{caseFilter}'. Cases: {string.Join("; ", all.Select(c => c.Name))}.");
        }

        if (smallest)
        {
            // One small case per op and kernel variant (fewest bytes moved): what compute-sanitizer runs in the GPU bundle.
            selected = selected.GroupBy(c => c.OpVariant, StringComparer.Ordinal).Select(g => g.MinBy(c => c.Bytes)!).ToList();
        }
        else if (budgetSeconds > 0)
        {
            // Short of time, every op and variant gets its smallest case first, then the rest in order.
            var first = selected.GroupBy(c => c.OpVariant, StringComparer.Ordinal).Select(g => g.MinBy(c => c.Bytes)!).ToList();
            selected = [.. first, .. selected.Except(first)];
        }
        if (list)
        {
            foreach (var c in selected) output.WriteLine($"{c.Op,-14} {c.Name}");
            return 0;
        }

        Backend backend;
        KernelTraceDriver? trace = null;
        try
        {
            if (backendName == "cpu") backend = BackendFactory.Create(backendName);
            else
            {
                // The CUDA driver (real or emulated) is traced, so every result lists the kernels it launched.
                Cuda.ICudaDriver driver = Cuda.RealCudaDriver.Default;
                if (backendName == "cuda-emu")
                {
                    if (!Cuda.Emulation.EmulatorDriver.TryLoad(out var emulator, out string why))
                        return Unavailable(backendName, $"CUDA emulator backend unavailable: {why}", jsonPath, warmup, repeats, output);
                    driver = emulator!;
                }
                trace = new KernelTraceDriver(driver);
                backend = Backends.Cuda.CudaBackend.Create(trace);
            }
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or NotSupportedException or Cuda.CudaException or DllNotFoundException or EntryPointNotFoundException)
        {
            return Unavailable(backendName, e.Message, jsonPath, warmup, repeats, output);
        }

        using (backend)
        {
            BenchMachine machine;
            BenchLimits limits;
            IBenchTimer timer;
            if (backend.Name == "cpu")
            {
                output.WriteLine("Measuring this machine's limits (copy bandwidth, FMA peak)...");
                var cpu = CpuMachineLimits.Current;
                limits = BenchLimits.FromCpu(cpu);
                machine = new BenchMachine($"CPU {RuntimeInformation.ProcessArchitecture}, {cpu.Threads} threads", null, "measured",
                    $"copy {cpu.CopyBandwidthGBps:F1} GB/s (read+write), FP32 FMA {cpu.FmaPeakGflops:F1} GFLOP/s ({cpu.VectorBits}-bit)");
                timer = new StopwatchTimer();
            }
            else
            {
                var target = CudaBenchBinding.TryGetTarget(backend);
                if (target is null)
                    return Unavailable(backendName, $"backend '{backend.Name}' does not expose a CUDA stream for event timing.", jsonPath, warmup, repeats, output);
                var peak = DevicePeaks.Find(target.Device.Name);
                limits = peak is null ? BenchLimits.None : BenchLimits.FromDevice(peak);
                string note = backendName == "cuda-emu"
                    ? "kernel emulator on the CPU: timings show emulator speed, not GPU speed"
                    : peak?.Note ?? $"'{target.Device.Name}' is not in the peak table: no percentages";
                machine = new BenchMachine(target.Device.Name, target.Device.ComputeCapability, peak is null ? "none" : "datasheet", note);
                timer = new CudaEventTimer(target.Driver, target.Stream, target.Device.L2CacheBytes);
            }

            output.WriteLine($"Backend {backend.Name} on {machine.Name}: {machine.Note}");
            output.WriteLine($"Timing: {timer.Method}, {warmup} warm-up, median of {repeats}{(budgetSeconds > 0 ? $", at most {budgetSeconds} s" : "")}; {selected.Count} cases.");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            bool tera = backend.Name != "cpu";
            output.WriteLine($"{"case",-58} {"median ms",11} {(tera ? "TFLOP/s" : "GFLOP/s"),10} {"GB/s",10} {"%compute",9} {"%memory",8}");
            var results = new List<BenchCaseResult>();
            var skipped = new List<BenchSkip>();
            int failures = 0;
            try
            {
                foreach (var c in selected)
                {
                    if (budgetSeconds > 0 && clock.Elapsed.TotalSeconds > budgetSeconds)
                    {
                        skipped.Add(new BenchSkip(c.Name, $"time budget of {budgetSeconds} s spent"));
                        continue;
                    }
                    if (budgetSeconds > 0 && c.EstimatedSeconds?.Invoke() is { } need && budgetSeconds - clock.Elapsed.TotalSeconds < need)
                    {
                        // A slow case (e.g. a multi-GB checkpoint to write and load) must not run past the budget.
                        string why = string.Create(CultureInfo.InvariantCulture, $"time budget of {budgetSeconds} s: needs about {need:F0} s, {budgetSeconds - clock.Elapsed.TotalSeconds:F0} s left");
                        skipped.Add(new BenchSkip(c.Name, why));
                        output.WriteLine($"{c.Name,-58} skipped: {why}");
                        continue;
                    }
                    BenchCaseResult r;
                    try
                    {
                        r = BenchRunner.Run(c, backend, timer, limits, warmup, repeats, trace);
                    }
                    catch (NotSupportedException e)
                    {
                        // An op without a kernel on this backend yet: say so and measure the rest.
                        skipped.Add(new BenchSkip(c.Name, e.Message));
                        output.WriteLine($"{c.Name,-58} skipped: {e.Message}");
                        continue;
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        // A case that fails must not cost the others their figures (nor the JSON):
                        // record it, go on, and exit non-zero at the end.
                        failures++;
                        skipped.Add(new BenchSkip(c.Name, $"failed: {e.GetType().Name}: {e.Message}"));
                        output.WriteLine($"{c.Name,-58} FAILED: {e.GetType().Name}: {e.Message}");
                        continue;
                    }
                    results.Add(r);
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{r.Name,-58} {r.MedianMs,11:F4} {(tera ? r.Gflops / 1000 : r.Gflops),10:F2} {r.GBps,10:F1} {Percent(r.PercentComputePeak),9} {Percent(r.PercentMemoryPeak),8}{(r.TokensPerSecond is { } tps ? $" {tps,10:F1} tok/s" : "")}{(r.MsPerLayer is { } mpl ? $" {mpl,8:F3} ms/layer" : "")}"));
                }
            }
            finally
            {
                (timer as IDisposable)?.Dispose();
            }
            int budgetSkips = skipped.Count(k => k.Reason.StartsWith("time budget", StringComparison.Ordinal));
            if (budgetSkips > 0) output.WriteLine($"{budgetSkips} cases not run: time budget of {budgetSeconds} s spent.");

            if (jsonPath is not null)
            {
                var report = new BenchReport(BenchReport.SchemaId, DateTime.UtcNow, backend.Name, true, null, timer.Method, warmup, repeats, machine, limits, results)
                {
                    Skipped = skipped,
                };
                WriteJson(jsonPath, report);
                output.WriteLine($"Wrote {jsonPath}");
            }
            if (failures > 0) output.WriteLine($"{failures} cases failed (listed under \"skipped\" with reason \"failed: ...\").");
            return failures > 0 ? CaseFailed : 0;
        }
    }

    private static string Percent(double? value) => value is null ? "-" : value.Value.ToString("F1", CultureInfo.InvariantCulture) + "%";

    private static int Unavailable(string backendName, string reason, string? jsonPath, int warmup, int repeats, TextWriter output)
    {
        output.WriteLine($"Backend '{backendName}' unavailable: {reason}");
        if (jsonPath is not null)
        {
            var report = new BenchReport(BenchReport.SchemaId, DateTime.UtcNow, backendName, false, reason, "none", warmup, repeats,
                new BenchMachine("unavailable", null, "none", reason), BenchLimits.None, []);
            WriteJson(jsonPath, report);
            output.WriteLine($"Wrote {jsonPath}");
        }
        return BackendUnavailable;
    }

    private static void WriteJson(string path, BenchReport report)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, report.ToJson());
    }

    /// <summary>
    /// The cases named in <paramref name="path"/>, one exact name per line (blank lines and lines
    /// starting with '#' skipped), in the file's order: one process runs them all (the GPU bundle
    /// runs its compute-sanitizer cases this way, so the instrumented module loads once).
    /// </summary>
    private static List<OpBenchCase> FromCasesFile(string path, IReadOnlyList<OpBenchCase> available)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliUsageException($"cannot read --cases-file '{path}': {e.Message}");
        }
        var byName = available.ToDictionary(c => c.Name, StringComparer.OrdinalIgnoreCase);
        var cases = new List<OpBenchCase>();
        foreach (string raw in lines)
        {
            string name = raw.Trim();
            if (name.Length == 0 || name.StartsWith('#')) continue;
            if (!byName.TryGetValue(name, out var c))
                throw new CliUsageException($"--cases-file '{path}': no case is named '{name}' for this backend and op selection.");
            if (!cases.Contains(c)) cases.Add(c);
        }
        if (cases.Count == 0) throw new CliUsageException($"--cases-file '{path}' names no case.");
        return cases;
    }
}
