namespace DeepKernels.Cli;

/// <summary>A `deepkernels` subcommand. Implementations are found by reflection, one file each under Commands/.</summary>
internal interface ICliCommand
{
    /// <summary>The word after `deepkernels`.</summary>
    string Name { get; }

    /// <summary>One line for the help listing.</summary>
    string Summary { get; }

    /// <summary>Runs the command; returns the process exit code.</summary>
    int Run(CliArguments args, TextWriter output);
}

/// <summary>Wrong usage: printed as a message with exit code 2, never as a stack trace.</summary>
internal sealed class CliUsageException(string message) : Exception(message);
