namespace DeepKernels.Model.Tokenization;

/// <summary>
/// The built-in English text from which the tiny preset's BPE merges are learned. Written for
/// this project; changing it changes the tiny tokenizer (bump <see cref="TinyTokenizer.Version"/>).
/// </summary>
internal static class TinyTokenizerCorpus
{
    public const string Text = """
        The old harbour town wakes early. Before the sun is over the hills, the fishing boats are back
        at the quay, and the market is loud with people buying bread, fish, cheese and apples. A baker
        named Martha opens her shop at five o'clock; she has baked there for thirty-two years, and she
        says the secret of good bread is patience, warm water and a little salt. Children walk to the
        school on the hill, carrying books, lunch boxes and sometimes a cat that refuses to stay at home.

        In the afternoon the wind turns. Clouds come in from the sea, grey and heavy, and the first drops
        of rain fall on the stones of the main street. Shopkeepers pull their awnings down, tourists hurry
        into the museum, and the harbour master writes the weather in his book: wind from the west, force
        six, rain until evening. Nobody is surprised. The weather here changes three or four times a day,
        and everyone carries a coat, an umbrella, or at least a good reason to stay inside.

        A computer is a machine that follows instructions. It reads numbers from memory, adds or multiplies
        them, and writes the results back. Modern processors can do billions of these operations every
        second, but they are often waiting: memory is much slower than arithmetic, so a program that reads
        each value only once can never run faster than the memory allows. Engineers call this the memory
        bandwidth bound, and they measure it in gigabytes per second. A graphics processor has thousands of
        small cores and a very wide memory bus, which is why it is so good at matrix multiplication, the
        central operation of neural networks.

        A language model reads text as a sequence of tokens. A token may be a whole word, a piece of a word,
        a single letter, or even a single byte. The tokenizer learns its pieces from a large collection of
        text: it starts with the two hundred and fifty-six possible bytes and repeatedly joins the pair of
        pieces that appears most often, until the vocabulary has the size it wants. Common words such as
        "the", "and" and "of" become single tokens very quickly, while rare names stay split into several
        parts. When the model generates an answer, it produces one token at a time, and the tokenizer turns
        the numbers back into readable text.

        To make a simple vegetable soup, chop two onions, three carrots, a few potatoes and some celery.
        Warm a spoon of olive oil in a large pot, add the onions and cook them slowly until they are soft
        and golden. Add the other vegetables, cover them with water or stock, and let everything simmer for
        about forty minutes. Season with pepper, salt and fresh herbs. Some people add beans, lentils or
        tomatoes; others serve the soup with grated cheese and thick slices of bread. It tastes even better
        the next day, when the flavours have had time to mix.

        The library on the corner has a quiet reading room with tall windows. On weekdays it is full of
        students preparing for their exams, retired teachers reading newspapers, and writers who cannot work
        at home. The librarian, a patient man with round glasses, knows where every book is, even the ones
        that were put back on the wrong shelf. He believes that a good question is worth more than a quick
        answer, and he is always happy to help someone find what they are looking for.

        Mathematics is the language of patterns. Counting, measuring and comparing are older than writing,
        and the first written numbers were probably records of grain, sheep and taxes. Today we use numbers
        to describe the orbits of planets, the growth of cities and the probability of rain tomorrow. A
        matrix is a table of numbers with rows and columns; multiplying two matrices combines every row of
        the first with every column of the second. Large models multiply matrices with many thousands of
        rows, and they do it again for every token they read or write.

        Walking along the coast path in spring, you can see seabirds nesting on the cliffs, small flowers
        between the rocks, and sometimes seals resting on the beach below. The path is narrow in places, so
        good shoes are important, and it is wise to check the tide before going down to the sand. Many
        walkers stop at the lighthouse, which has guided ships past the dangerous rocks for more than a
        hundred and fifty years. Its keeper once lived in the small white house next to the tower; now the
        light is automatic, and the house is a cafe that sells tea, cake and hot chocolate.

        Questions, answers, ideas and stories: people have always shared them. Some write letters, some send
        short messages, and some simply talk over dinner. What matters is that someone listens. If you want
        to learn something new, start small, practise every day, and do not be afraid of mistakes; they are
        the fastest teachers. Keep notes, ask for help when you need it, and remember why you started.
        """;
}
