namespace DeepKernels.Cuda;

/// <summary>A CUDA grid, block or cluster extent.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    /// <summary>X * Y * Z.</summary>
    public ulong Volume => (ulong)X * Y * Z;

    /// <inheritdoc />
    public override string ToString() => $"({X}, {Y}, {Z})";
}
