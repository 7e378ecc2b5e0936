namespace DeepKernels.Model.Config;

/// <summary>
/// A model configuration (config.json or a preset) that cannot be used: missing or mistyped
/// fields, or values the kernels do not support. The message names the source and the field.
/// It is an <see cref="IOException"/> because it describes bad file contents.
/// </summary>
public sealed class ModelConfigException : IOException
{
    /// <summary>Creates the exception.</summary>
    public ModelConfigException(string source, string field, string message)
        : base($"{source}: '{field}': {message}")
    {
        ConfigSource = source;
        Field = field;
    }

    /// <summary>Where the configuration came from (a file path or a preset name).</summary>
    public string ConfigSource { get; }

    /// <summary>The offending field, spelled as in config.json.</summary>
    public string Field { get; }
}
