namespace DeepKernels.Memory.Pool;

/// <summary>
/// A snapshot of a pool's or arena's bookkeeping. <see cref="AllocationCount"/> counts calls into
/// the underlying allocator (native memory, cuMemAllocFromPoolAsync); once a workload is warm it
/// must stop growing, which is what the tests assert.
/// </summary>
/// <param name="BytesReserved">Bytes currently held from the underlying allocator (in use or cached).</param>
/// <param name="BytesInUse">Bytes currently handed out to callers.</param>
/// <param name="PeakBytesInUse">Largest <paramref name="BytesInUse"/> seen.</param>
/// <param name="AllocationCount">Calls made to the underlying allocator so far.</param>
/// <param name="ReleaseCount">Calls made to the underlying free so far.</param>
/// <param name="RentCount">Requests served (from the cache or by allocating).</param>
public readonly record struct PoolStatistics(long BytesReserved, long BytesInUse, long PeakBytesInUse, long AllocationCount, long ReleaseCount, long RentCount)
{
    /// <summary>One line for logs: reserved, in use, peak, allocations.</summary>
    public override string ToString() =>
        $"reserved {BytesReserved} B, in use {BytesInUse} B, peak {PeakBytesInUse} B, {AllocationCount} allocations, {ReleaseCount} frees, {RentCount} rents";
}
