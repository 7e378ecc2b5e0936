using System.Text;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// A byte-level BPE tokenizer loaded from a Hugging Face <c>tokenizer.json</c> as DeepSeek-V3
/// ships it: added tokens matched first (longest first), then the pre-tokenizer (Sequence / Split
/// / ByteLevel), the BPE model, and the post-processor (e.g. BOS); decoding maps byte-level
/// characters back to bytes and reads them as UTF-8 (invalid sequences become U+FFFD).
/// Supported components and options are listed in the model README; anything else is refused
/// at load with a <see cref="TokenizerNotSupportedException"/>. Thread-safe after loading.
/// </summary>
public sealed class BpeTokenizer
{
    private readonly AddedTokenMatcher _matcher;
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly string?[] _tokens;

    internal BpeTokenizer(BpeModel model, IReadOnlyList<AddedToken> addedTokens, PreTokenizer? preTokenizer, PostProcessor postProcessor, bool byteLevelDecoder, string source)
    {
        Model = model;
        AddedTokens = addedTokens;
        PreTokenizer = preTokenizer;
        PostProcessor = postProcessor;
        ByteLevelDecoder = byteLevelDecoder;
        Source = source;
        _matcher = new AddedTokenMatcher(addedTokens);
        _addedById = addedTokens.ToDictionary(t => t.Id);
        int size = Math.Max(model.Vocab.Count == 0 ? 0 : model.Vocab.Values.Max() + 1, addedTokens.Count == 0 ? 0 : addedTokens.Max(t => t.Id) + 1);
        _tokens = new string?[size];
        foreach (var (token, id) in model.Vocab) _tokens[id] = token;
        foreach (var t in addedTokens) _tokens[t.Id] = t.Content;
        foreach (int id in postProcessor.Prefix.Concat(postProcessor.Suffix))
        {
            if (id >= size || _tokens[id] is null) throw new TokenizerFormatException(source, "post_processor", $"the template adds id {id}, which is not a token.");
        }
    }

    /// <summary>Loads <paramref name="path"/> (a tokenizer.json file).</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="TokenizerFormatException">The file is malformed or uses unsupported components.</exception>
    public static BpeTokenizer Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No tokenizer file at {path}.", path);
        string text;
        try
        {
            text = File.ReadAllText(path, new UTF8Encoding(false, throwOnInvalidBytes: true));
        }
        catch (DecoderFallbackException e)
        {
            throw new TokenizerFormatException(path, "$", "the file is not valid UTF-8.", e);
        }
        return Parse(text, path);
    }

    /// <summary>Reads a tokenizer from JSON text; <paramref name="source"/> names it in errors.</summary>
    public static BpeTokenizer Parse(string json, string source = "tokenizer.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(source);
        return new TokenizerJsonReader(source).Read(json);
    }

    /// <summary>The file (or source name) this tokenizer was read from.</summary>
    public string Source { get; }

    /// <summary>The BPE model.</summary>
    public BpeModel Model { get; }

    /// <summary>Added tokens (special and normal).</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>The pre-tokenizer, or null (the whole text is one piece).</summary>
    public PreTokenizer? PreTokenizer { get; }

    /// <summary>Ids added around a sequence by <see cref="Encode"/> with special tokens.</summary>
    public PostProcessor PostProcessor { get; }

    /// <summary>Whether the decoder maps byte-level characters back to bytes.</summary>
    public bool ByteLevelDecoder { get; }

    /// <summary>One more than the largest token id (vocabulary and added tokens).</summary>
    public int VocabSize => _tokens.Length;

    /// <summary>Whether <paramref name="id"/> names a token.</summary>
    public bool IsValidId(int id) => (uint)id < (uint)_tokens.Length && _tokens[id] is not null;

    /// <summary>The token string of an id (byte-level alphabet for vocabulary tokens), or null.</summary>
    public string? IdToToken(int id) => IsValidId(id) ? _tokens[id] : null;

    /// <summary>The id of a token string (added tokens first, then the vocabulary), or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        foreach (var t in AddedTokens)
        {
            if (t.Content == token) return t.Id;
        }
        return Model.Vocab.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>Whether <paramref name="id"/> is a special added token.</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    /// <summary>
    /// Encodes <paramref name="text"/>. With <paramref name="addSpecialTokens"/> the
    /// post-processor's ids (e.g. BOS) are added around it.
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens) ids.AddRange(PostProcessor.Prefix);
        foreach (var (plain, id) in _matcher.Split(text))
        {
            if (plain is null)
            {
                ids.Add(id);
                continue;
            }
            var pieces = PreTokenizer is null ? [plain] : PreTokenizer.Split(plain);
            foreach (string piece in pieces) Model.Encode(piece, ids);
        }
        if (addSpecialTokens) ids.AddRange(PostProcessor.Suffix);
        return ids.ToArray();
    }

    /// <summary>
    /// Decodes ids to text. Special tokens are dropped when <paramref name="skipSpecialTokens"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is not a token of this tokenizer.</exception>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids) AppendBytes(id, skipSpecialTokens, bytes);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>A decoder for streaming output: feed ids one at a time, get the text they complete.</summary>
    public TokenStreamDecoder CreateStreamDecoder(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);

    /// <summary>Appends the UTF-8 bytes a token stands for.</summary>
    internal void AppendBytes(int id, bool skipSpecialTokens, List<byte> destination)
    {
        if (!IsValidId(id)) throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is not in the tokenizer {Source} (ids 0..{VocabSize - 1}).");
        if (skipSpecialTokens && _addedById.TryGetValue(id, out var added) && added.Special) return;
        string token = _tokens[id]!;
        // Added tokens go through the decoder like any other (as in the reference implementation); a
        // token with a character outside the byte alphabet (e.g. "<｜begin▁of▁sentence｜>") is taken as text.
        if (!ByteLevelDecoder || !ByteLevelAlphabet.TryDecode(token, destination)) destination.AddRange(Encoding.UTF8.GetBytes(token));
    }
}
