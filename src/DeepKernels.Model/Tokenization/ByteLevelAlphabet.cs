namespace DeepKernels.Model.Tokenization;

/// <summary>
/// The byte-level alphabet of GPT-2-style BPE: every byte 0..255 is shown as one printable
/// character so that vocabularies and merges are plain strings. Bytes that are printable Latin-1
/// characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes take the
/// characters U+0100, U+0101, ... in increasing byte order.
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToCharTable = BuildTable();
    private static readonly short[] CharToByteTable = BuildInverse(ByteToCharTable);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)(256 + next++);
        }
        return table;
    }

    private static short[] BuildInverse(char[] table)
    {
        var inverse = new short[512];
        Array.Fill(inverse, (short)-1);
        for (int b = 0; b < 256; b++) inverse[table[b]] = (short)b;
        return inverse;
    }

    /// <summary>The character that stands for <paramref name="value"/>.</summary>
    public static char ToChar(byte value) => ByteToCharTable[value];

    /// <summary>The byte a character stands for, or false when it is not in the alphabet.</summary>
    public static bool TryGetByte(char c, out byte value)
    {
        if (c < 512 && CharToByteTable[c] >= 0)
        {
            value = (byte)CharToByteTable[c];
            return true;
        }
        value = 0;
        return false;
    }

    /// <summary>Maps UTF-8 bytes to their alphabet string.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++) dst[i] = ByteToCharTable[src[i]];
        });
    }

    /// <summary>Maps the UTF-8 encoding of <paramref name="text"/> to its alphabet string.</summary>
    public static string EncodeText(string text) => Encode(System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>
    /// Appends the bytes of an alphabet string to <paramref name="destination"/>; returns false
    /// (appending nothing) when a character is outside the alphabet.
    /// </summary>
    public static bool TryDecode(string token, List<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(token);
        ArgumentNullException.ThrowIfNull(destination);
        foreach (char c in token)
        {
            if (c >= 512 || CharToByteTable[c] < 0) return false;
        }
        foreach (char c in token) destination.Add((byte)CharToByteTable[c]);
        return true;
    }
}
