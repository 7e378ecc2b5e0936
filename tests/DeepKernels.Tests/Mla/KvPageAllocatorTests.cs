using DeepKernels.Memory.KvCache;

namespace DeepKernels.Tests.Mla;

public class KvPageAllocatorTests
{
    [Test]
    public void AppendAllocatesPagesAsNeeded()
    {
        var alloc = new KvPageAllocator(10, 16);
        int s = alloc.CreateSequence();
        Assert.That(alloc.Append(s, 0), Is.EqualTo(0));
        Assert.That(alloc.Pages(s), Is.Empty);
        Assert.That(alloc.Append(s, 16), Is.EqualTo(0));
        Assert.That(alloc.Pages(s), Has.Length.EqualTo(1));
        Assert.That(alloc.Append(s, 1), Is.EqualTo(16));
        Assert.That(alloc.Pages(s), Has.Length.EqualTo(2));
        Assert.That(alloc.Append(s, 40), Is.EqualTo(17));
        Assert.That(alloc.Length(s), Is.EqualTo(57));
        Assert.That(alloc.Pages(s), Has.Length.EqualTo(4));
        Assert.That(alloc.FreePages, Is.EqualTo(6));
        var slots = new int[3];
        alloc.GetSlots(s, 15, slots);
        int[] pages = alloc.Pages(s);
        Assert.That(slots, Is.EqualTo(new[] { pages[0] * 16 + 15, pages[1] * 16, pages[1] * 16 + 1 }));
    }

    [Test]
    public void ForkSharesFullPagesAndCopiesThePartialOne()
    {
        var alloc = new KvPageAllocator(10, 16);
        int parent = alloc.CreateSequence();
        alloc.Append(parent, 40); // 2 full pages + 8 tokens
        int[] pp = alloc.Pages(parent);
        var fork = alloc.Fork(parent);
        int[] cp = alloc.Pages(fork.Sequence);
        Assert.That(alloc.Length(fork.Sequence), Is.EqualTo(40));
        Assert.That(cp[..2], Is.EqualTo(pp[..2]));
        Assert.That(cp[2], Is.Not.EqualTo(pp[2]));
        Assert.That(fork.NeedsCopy);
        Assert.That((fork.SourcePage, fork.CopyPage, fork.CopiedTokens), Is.EqualTo((pp[2], cp[2], 8)));
        Assert.That(alloc.ReferenceCount(pp[0]), Is.EqualTo(2));
        Assert.That(alloc.ReferenceCount(pp[2]), Is.EqualTo(1));
        Assert.That(alloc.FreePages, Is.EqualTo(6));

        // Diverging appends write to private pages only.
        alloc.Append(parent, 10);
        alloc.Append(fork.Sequence, 10);
        Assert.That(alloc.Pages(parent).Intersect(alloc.Pages(fork.Sequence)), Is.EquivalentTo(pp[..2]));

        // Freeing the parent keeps shared pages alive for the child; freeing both returns everything.
        alloc.Free(parent);
        Assert.That(alloc.ReferenceCount(pp[0]), Is.EqualTo(1));
        Assert.That(alloc.FreePages, Is.EqualTo(10 - 4));
        alloc.Free(fork.Sequence);
        Assert.That(alloc.FreePages, Is.EqualTo(10));
        Assert.That(alloc.LiveSequences, Is.EqualTo(0));
    }

    [Test]
    public void ForkOfPageAlignedSequenceCopiesNothing()
    {
        var alloc = new KvPageAllocator(4, 16);
        int parent = alloc.CreateSequence();
        alloc.Append(parent, 32);
        var fork = alloc.Fork(parent);
        Assert.That(fork.NeedsCopy, Is.False);
        Assert.That(alloc.Pages(fork.Sequence), Is.EqualTo(alloc.Pages(parent)));
        Assert.That(alloc.FreePages, Is.EqualTo(2));
    }

    [Test]
    public void FreedPagesAreReused()
    {
        var alloc = new KvPageAllocator(3, 16);
        int a = alloc.CreateSequence();
        alloc.Append(a, 48);
        int[] pages = alloc.Pages(a);
        alloc.Free(a);
        int b = alloc.CreateSequence();
        alloc.Append(b, 48);
        Assert.That(alloc.Pages(b), Is.EquivalentTo(pages));
        Assert.That(b, Is.Not.EqualTo(a));
    }

    [Test]
    public void ExhaustionSaysRequestedAndFreeAndChangesNothing()
    {
        var alloc = new KvPageAllocator(4, 16);
        int a = alloc.CreateSequence();
        alloc.Append(a, 20); // 2 pages
        var ex = Assert.Throws<KvCacheExhaustedException>(() => alloc.Append(a, 60))!; // needs 5 total -> 3 more
        Assert.That((ex.RequestedPages, ex.FreePages, ex.TotalPages), Is.EqualTo((3, 2, 4)));
        Assert.That(ex.Message, Does.Contain("3 page(s) requested").And.Contain("2 free"));
        Assert.That(alloc.Length(a), Is.EqualTo(20));
        Assert.That(alloc.FreePages, Is.EqualTo(2));
        alloc.Append(a, 2 * 16 + 12); // exactly fills the cache
        Assert.That(alloc.FreePages, Is.EqualTo(0));
        Assert.That(alloc.Fork(a).NeedsCopy, Is.False, "a page-aligned fork needs no page");

        var small = new KvPageAllocator(2, 16);
        int p = small.CreateSequence();
        small.Append(p, 20);
        var forkEx = Assert.Throws<KvCacheExhaustedException>(() => small.Fork(p))!;
        Assert.That((forkEx.RequestedPages, forkEx.FreePages), Is.EqualTo((1, 0)));
        Assert.That(small.LiveSequences, Is.EqualTo(1));
    }

    [Test]
    public void DoubleFreeIsDetected()
    {
        var alloc = new KvPageAllocator(4, 16);
        int a = alloc.CreateSequence();
        alloc.Append(a, 5);
        alloc.Free(a);
        var ex = Assert.Throws<InvalidOperationException>(() => alloc.Free(a))!;
        Assert.That(ex.Message, Does.Contain($"Sequence {a}"));
        Assert.Throws<InvalidOperationException>(() => alloc.Append(a, 1));
        Assert.Throws<ArgumentException>(() => alloc.Free(12345));
        Assert.That(alloc.FreePages, Is.EqualTo(4));
    }

    [Test]
    public void BadPageSizesAreRejected()
    {
        foreach (int p in new[] { 0, 8, 48, 100, 512 })
            Assert.Throws<ArgumentException>(() => _ = new KvPageAllocator(4, p), $"page size {p}");
        foreach (int p in new[] { 16, 32, 64, 128, 256 })
            Assert.That(new KvPageAllocator(4, p).PageSize, Is.EqualTo(p));
    }

    [Test]
    public void ConcurrentAppendsNeverShareOrLosePages()
    {
        const int sequences = 32, pageSize = 16;
        var alloc = new KvPageAllocator(sequences * 20, pageSize);
        var ids = new int[sequences];
        Parallel.For(0, sequences, i => ids[i] = alloc.CreateSequence());
        Parallel.For(0, sequences * 50, i =>
        {
            int s = ids[i % sequences];
            alloc.Append(s, 1 + i % 5);
            if (i % 97 == 0)
            {
                int f = alloc.Fork(s).Sequence;
                alloc.Free(f);
            }
        });
        var all = new List<int>();
        for (int i = 0; i < sequences; i++)
        {
            int expectedLen = 0;
            for (int j = i; j < sequences * 50; j += sequences) expectedLen += 1 + j % 5;
            Assert.That(alloc.Length(ids[i]), Is.EqualTo(expectedLen));
            Assert.That(alloc.Pages(ids[i]), Has.Length.EqualTo((expectedLen + pageSize - 1) / pageSize));
            all.AddRange(alloc.Pages(ids[i]));
        }
        Assert.That(all.Distinct().Count(), Is.EqualTo(all.Count), "a page is owned twice");
        Assert.That(alloc.FreePages, Is.EqualTo(alloc.TotalPages - all.Count));
    }

    [Test]
    public void ExportBlockTablePadsWithMinusOne()
    {
        var alloc = new KvPageAllocator(8, 16);
        int a = alloc.CreateSequence(), b = alloc.CreateSequence(), c = alloc.CreateSequence();
        alloc.Append(a, 33);
        alloc.Append(b, 0);
        alloc.Append(c, 16);
        int[] seqs = [a, b, c];
        int max = alloc.MaxPages(seqs);
        Assert.That(max, Is.EqualTo(3));
        var table = new int[9];
        var lens = new int[3];
        alloc.ExportBlockTable(seqs, max, table, lens);
        Assert.That(lens, Is.EqualTo(new[] { 33, 0, 16 }));
        Assert.That(table[..3], Is.EqualTo(alloc.Pages(a)));
        Assert.That(table[3..6], Is.EqualTo(new[] { -1, -1, -1 }));
        Assert.That(table[6..9], Is.EqualTo(new[] { alloc.Pages(c)[0], -1, -1 }));
        Assert.Throws<ArgumentException>(() => alloc.ExportBlockTable(seqs, 2, new int[6], lens));
    }

    [Test]
    public void AppendManyIsAllOrNothing()
    {
        var alloc = new KvPageAllocator(3, 16);
        int a = alloc.CreateSequence(), b = alloc.CreateSequence();
        alloc.Append(a, 16);
        var starts = new int[2];
        var ex = Assert.Throws<KvCacheExhaustedException>(() => alloc.AppendMany([a, b], 17, starts))!;
        Assert.That((ex.RequestedPages, ex.FreePages), Is.EqualTo((4, 2)));
        Assert.That((alloc.Length(a), alloc.Length(b), alloc.FreePages), Is.EqualTo((16, 0, 2)));
        alloc.AppendMany([a, b], 1, starts);
        Assert.That(starts, Is.EqualTo(new[] { 16, 0 }));
        Assert.Throws<ArgumentException>(() => alloc.AppendMany([a, a], 1, starts));
    }
}
