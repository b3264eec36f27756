"""Mixed sample texts shared by the tokenizer fixture generators (tools/gen_*_fixture.py)."""
import random

HAND_WRITTEN = [
    "",
    " ",
    "Hello, world!",
    "Hello world's end, isn't it? We'll see; they've said I'm fine, you'd know.",
    "CAPITAL LETTERS DON'T SPLIT LIKE THAT'S, WE'LL, THEY'VE",
    "  leading spaces and trailing spaces   ",
    "tabs\tand\t\tnew\nlines\n\n\nand\r\nwindows\r\n line ends",
    "Numbers: 1 12 123 1234 12345 3.14159 1,000,000 2024-01-01 0x1F",
    "Emoji: 😀😃😄 👩‍👩‍👧‍👦 🇫🇷 and ✨ sparkles ✨",
    "Unicode: naïve café résumé Straße Ελληνικά русский текст 中文字符 日本語のテキスト 한국어 العربية עברית हिन्दी",
    "Full-width　space and non-breaking\u00a0space and thin\u2009space",
    "Code: fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); } // comment",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n    pass\n",
    "URLs: https://example.com/path?query=1&other=two#frag user@example.org",
    " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> Chronicles ( Japanese : 戦場のヴァルキュリア3 ) \n",
    "The @-@ marker and @,@ and @.@ in wikitext 1 @,@ 000",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!!!!!!!!?????......,,,,;;;;::::----____====++++****",
    "Mixed123numbers456and789letters",
    "quotes 'single' \"double\" `back` ’curly’ “curly”",
    "Combining: e\u0301 a\u0308 n\u0303 and zero\u200bwidth",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
]

PIECES = [" ", "  ", "\t", "\n", "\r\n", "'s", "'ll", "'T", "a", "Z", "é", "中", "0", "42", "1234",
          ".", ",", "!", "@", "-", "😀", "\u00a0", "word", " the", "Hello", "ing", "\u3000", "'"]


def random_samples(n=40, seed=1234):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def samples():
    return HAND_WRITTEN + random_samples()
