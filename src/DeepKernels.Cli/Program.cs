using System.Reflection;

namespace DeepKernels.Cli;

/// <summary>Entry point of the `deepkernels` command.</summary>
internal static class Program
{
    internal static IReadOnlyList<ICliCommand> Commands { get; } = typeof(Program).Assembly.GetTypes()
        .Where(t => !t.IsAbstract && typeof(ICliCommand).IsAssignableFrom(t))
        .Select(t => (ICliCommand)Activator.CreateInstance(t, nonPublic: true)!)
        .OrderBy(c => c.Name, StringComparer.Ordinal)
        .ToList();

    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    internal static int Run(string[] args, TextWriter output, TextWriter error)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            PrintHelp(output);
            return args.Length == 0 ? 2 : 0;
        }
        var command = Commands.FirstOrDefault(c => c.Name == args[0]);
        if (command is null)
        {
            error.WriteLine($"deepkernels: unknown command '{args[0]}'. Commands: {string.Join(", ", Commands.Select(c => c.Name))}.");
            return 2;
        }
        try
        {
            var parsed = new CliArguments(args.Skip(1));
            return command.Run(parsed, output);
        }
        catch (CliUsageException e)
        {
            error.WriteLine($"deepkernels {command.Name}: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or NotSupportedException or InvalidOperationException or Cuda.CudaException or UnauthorizedAccessException)
        {
            error.WriteLine($"deepkernels {command.Name}: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }

    private static void PrintHelp(TextWriter output)
    {
        output.WriteLine($"deepkernels {Assembly.GetExecutingAssembly().GetName().Version} — DeepSeek-style inference kernels for .NET");
        output.WriteLine();
        output.WriteLine("Commands:");
        foreach (var c in Commands) output.WriteLine($"  {c.Name,-10} {c.Summary}");
    }
}
