namespace DeepKernels.Memory.KvCache;

/// <summary>Thrown when a KV cache allocation needs more pages than are free; nothing was allocated.</summary>
public sealed class KvCacheExhaustedException : Exception
{
    /// <summary>Creates the exception for a request of <paramref name="requestedPages"/> with <paramref name="freePages"/> free.</summary>
    public KvCacheExhaustedException(int requestedPages, int freePages, int totalPages)
        : base($"KV cache exhausted: {requestedPages} page(s) requested, {freePages} free of {totalPages}.")
    {
        RequestedPages = requestedPages;
        FreePages = freePages;
        TotalPages = totalPages;
    }

    /// <summary>Pages the failed request needed.</summary>
    public int RequestedPages { get; }

    /// <summary>Pages that were free at the time.</summary>
    public int FreePages { get; }

    /// <summary>Pages in the cache.</summary>
    public int TotalPages { get; }
}
