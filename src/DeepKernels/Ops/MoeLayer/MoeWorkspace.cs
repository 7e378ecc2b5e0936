using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MoeLayer;

/// <summary>
/// Every temporary buffer a <see cref="MoeFeedForward"/> call needs, allocated once from the
/// backend for up to <see cref="MaxTokens"/> tokens, so that forward calls allocate nothing
/// per token. Reuse it across calls and layers of the same shape; dispose it when done.
/// Not thread-safe: one call at a time per workspace.
/// </summary>
public sealed class MoeWorkspace : IDisposable
{
    private readonly List<TensorBuffer> _buffers = [];

    private MoeWorkspace(Backend backend, MoeLayerConfig config, int maxTokens)
    {
        Backend = backend;
        Config = config;
        MaxTokens = maxTokens;
        Alignment = config.Alignment > 0 ? config.Alignment : backend is CpuBackend ? 1 : MoePermutation.DefaultAlignment;
        Capacity = MoePermutation.ContiguousCapacity(maxTokens, config.TopK, config.NumExperts, Alignment);
        int h = config.Hidden, i = config.Intermediate, s = config.SharedIntermediate;
        int hb = GroupedFp8Gemm.KBlocks(h), ib = GroupedFp8Gemm.KBlocks(i), sb = GroupedFp8Gemm.KBlocks(Math.Max(s, 1));
        try
        {
            ExpertOffsets = Add(DType.Int32, config.NumExperts + 1);
            MIndices = Add(DType.Int32, Capacity);
            RowTokens = Add(DType.Int32, Capacity);
            Inverse = Add(DType.Int32, maxTokens, config.TopK);
            TokenQ = Add(DType.Float8E4M3, maxTokens, h);
            TokenScales = Add(DType.Float32, maxTokens, hb);
            RowQ = Add(DType.Float8E4M3, Capacity, h);
            RowScales = Add(DType.Float32, Capacity, hb);
            GateUp = Add(DType.Float32, Capacity, 2L * i);
            HiddenQ = Add(DType.Float8E4M3, Capacity, i);
            HiddenScales = Add(DType.Float32, Capacity, ib);
            Down = Add(DType.Float32, Capacity, h);
            SharedMaskedM = Add(DType.Int32, 1);
            RoutedIds = Add(DType.Int32, maxTokens, config.TopK);
            RoutedWeights = Add(DType.Float32, maxTokens, config.TopK);
            // The CUDA layout builder's per-chunk counts, sized for MaxTokens: no allocation per call.
            if (backend is CudaBackend) LayoutScratch = Add(DType.Int32, CudaBackend.LayoutScratchLength(maxTokens, config.TopK, config.NumExperts));
            if (s > 0)
            {
                SharedGateUp = Add(DType.Float32, maxTokens, 2L * s);
                SharedHiddenQ = Add(DType.Float8E4M3, maxTokens, s);
                SharedHiddenScales = Add(DType.Float32, maxTokens, sb);
                SharedOut = Add(DType.Float32, maxTokens, h);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// Allocates a workspace on <paramref name="backend"/> for <paramref name="config"/> and up
    /// to <paramref name="maxTokens"/> tokens per call.
    /// </summary>
    public static MoeWorkspace Create(Backend backend, MoeLayerConfig config, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(config);
        ObjectDisposedException.ThrowIf(backend.IsDisposed, backend);
        config.Validate();
        Guard.Positive(maxTokens, nameof(maxTokens));
        return new MoeWorkspace(backend, config, maxTokens);
    }

    /// <summary>The backend whose memory holds the buffers.</summary>
    public Backend Backend { get; }

    /// <summary>The layer shape this workspace serves.</summary>
    public MoeLayerConfig Config { get; }

    /// <summary>The most tokens one call may process.</summary>
    public int MaxTokens { get; }

    /// <summary>Segment alignment of the contiguous layout used.</summary>
    public int Alignment { get; }

    /// <summary>Rows of the permuted buffers.</summary>
    public int Capacity { get; }

    /// <summary>Bytes held by all buffers.</summary>
    public long Bytes => _buffers.Sum(b => b.View.ByteCount);

    /// <summary>Whether the buffers have been released.</summary>
    public bool IsDisposed { get; private set; }

    internal TensorView ExpertOffsets { get; }
    internal TensorView MIndices { get; }
    internal TensorView RowTokens { get; }
    internal TensorView Inverse { get; }
    internal TensorView TokenQ { get; }
    internal TensorView TokenScales { get; }
    internal TensorView RowQ { get; }
    internal TensorView RowScales { get; }
    internal TensorView GateUp { get; }
    internal TensorView HiddenQ { get; }
    internal TensorView HiddenScales { get; }
    internal TensorView Down { get; }
    internal TensorView SharedMaskedM { get; }
    internal TensorView RoutedIds { get; }
    internal TensorView RoutedWeights { get; }
    internal TensorView SharedGateUp { get; }
    internal TensorView SharedHiddenQ { get; }
    internal TensorView SharedHiddenScales { get; }
    internal TensorView SharedOut { get; }
    internal TensorView? LayoutScratch { get; }

    private TensorView Add(DType dtype, params ReadOnlySpan<long> shape)
    {
        var buffer = Backend.Allocate(dtype, shape);
        _buffers.Add(buffer);
        return buffer.View;
    }

    /// <summary>Frees every buffer; safe to call more than once.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        foreach (var b in _buffers) b.Dispose();
        _buffers.Clear();
    }
}
