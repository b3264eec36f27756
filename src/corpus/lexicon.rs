//! The synthetic corpus's lexicon and grammar: static tables, no logic.
//!
//! A sentence walks a small Markov chain over *slots* (grammatical positions: subject
//! determiner, subject noun, verb, object, preposition, ...). In each slot one word is drawn
//! from the slot's word list with Zipf weights (earlier words are more frequent), then one
//! outgoing edge is drawn: it spells a delimiter (" ", ", ", ". ", ".\n", ...) and moves to
//! the next slot.
//!
//! Rules the tables keep (checked by tests in [`super::synth`]) so that the byte string
//! determines the path through the chain (which makes the entropy rate computable):
//! words are ASCII letters only; delimiters start with a non-letter; within one slot no
//! delimiter is a proper prefix of another; and edges leaving one slot with the same
//! delimiter lead to slots whose word lists are disjoint.

/// A grammatical position: its word list (most frequent first) and its outgoing edges.
pub struct Slot {
    /// Name used in diagnostics.
    pub name: &'static str,
    /// Words, most frequent first (Zipf weights by rank).
    pub words: &'static [&'static str],
    /// Outgoing edges: (delimiter, next slot, relative weight).
    pub edges: &'static [(&'static str, usize, f64)],
}

/// Zipf exponent of word choice within a slot: weight of rank r (0-based) is 1/(r+ZIPF_Q)^ZIPF_S.
pub const ZIPF_S: f64 = 1.0;
/// Zipf offset (a Zipf-Mandelbrot "q"): flattens the head a little.
pub const ZIPF_Q: f64 = 2.0;

// Slot indices.
const DETC: usize = 0;
const NAME: usize = 1;
const PRON: usize = 2;
const ADJ_S: usize = 3;
const NOUN_S: usize = 4;
const ADV_PRE: usize = 5;
const VERB: usize = 6;
const DET: usize = 7;
const ADJ_O: usize = 8;
const NOUN_O: usize = 9;
const NAME_O: usize = 10;
const PREP: usize = 11;
const ADV_POST: usize = 12;
const CONJ: usize = 13;
const PRON_L: usize = 14;
const DET_S: usize = 15;

/// Where a line (and the generated text) starts.
pub const START_SLOT: usize = DETC;

const DETC_WORDS: &[&str] = &[
    "The", "A", "This", "My", "Our", "Every", "One", "That", "Your", "His", "Her", "Each", "No",
];
const DET_WORDS: &[&str] = &[
    "the", "a", "this", "my", "our", "every", "one", "that", "your", "his", "her", "each", "no",
];
const NAMES: &[&str] = &[
    "Anna", "Tom", "Maria", "Ben", "Lucy", "Sam", "Olga", "Peter", "Nina", "Oscar", "Clara", "Leo",
    "Ivy", "Hugo", "Rosa", "Felix", "Mark", "Julia", "Victor", "Elena",
];
const PRON_WORDS: &[&str] = &["She", "He", "It", "Nobody", "Someone", "Everyone"];
const PRON_L_WORDS: &[&str] = &["she", "he", "it", "nobody", "someone", "everyone"];
const ADJECTIVES: &[&str] = &[
    "little", "big", "small", "good", "new", "long", "great", "dark", "bright", "quiet", "happy",
    "cold", "warm", "strange", "tall", "young", "green", "blue", "heavy", "light", "soft", "hard",
    "sad", "brave", "clever", "lazy", "busy", "wild", "gentle", "tiny", "huge", "black", "white",
    "golden", "silver", "broken", "hidden", "famous", "careful", "lonely", "proud", "curious",
    "noisy", "simple", "sudden", "final", "rare", "pale", "narrow", "wide", "deep", "rich", "poor",
    "fast", "slow", "sweet", "bitter", "fresh", "strong", "weak",
];
const NOUNS: &[&str] = &[
    "man", "woman", "child", "house", "dog", "cat", "friend", "day", "city", "road", "book",
    "letter", "teacher", "doctor", "king", "queen", "bird", "horse", "garden", "door", "window",
    "table", "chair", "ship", "boat", "train", "car", "mountain", "forest", "village", "field",
    "song", "story", "dream", "night", "morning", "storm", "wind", "fire", "stone", "bridge",
    "tower", "market", "school", "church", "farmer", "soldier", "sailor", "baker", "painter",
    "student", "girl", "boy", "mother", "father", "brother", "sister", "neighbor", "stranger",
    "wolf", "fox", "bear", "mouse", "fish", "rabbit", "lamp", "key", "box", "bottle", "cup",
    "coat", "hat", "shoe", "ring", "map", "clock", "bell", "candle", "picture", "mirror", "wall",
    "path", "hill", "lake", "sea", "sky", "moon", "sun", "star", "cloud", "rain", "snow", "leaf",
    "flower", "seed", "bread", "cake", "coin", "sword", "wagon", "cottage", "castle", "kitchen",
    "library", "museum", "harbor", "station",
];
const VERBS: &[&str] = &[
    "sees",
    "finds",
    "likes",
    "takes",
    "makes",
    "wants",
    "knows",
    "loves",
    "hears",
    "holds",
    "keeps",
    "brings",
    "follows",
    "watches",
    "helps",
    "needs",
    "meets",
    "leaves",
    "calls",
    "opens",
    "carries",
    "paints",
    "builds",
    "sells",
    "buys",
    "reads",
    "writes",
    "draws",
    "remembers",
    "forgets",
    "visits",
    "chases",
    "catches",
    "pulls",
    "pushes",
    "moves",
    "shows",
    "hides",
    "saves",
    "feeds",
    "washes",
    "cleans",
    "fixes",
    "breaks",
    "throws",
    "misses",
    "notices",
    "answers",
    "asks",
    "greets",
    "thanks",
    "trusts",
    "fears",
    "admires",
    "wakes",
    "touches",
    "guards",
    "lifts",
    "drops",
    "counts",
    "sends",
    "teaches",
    "studies",
    "sings",
];
const ADV_PRE_WORDS: &[&str] = &[
    "often",
    "never",
    "always",
    "sometimes",
    "quietly",
    "suddenly",
    "rarely",
    "slowly",
    "quickly",
    "gladly",
    "soon",
    "still",
];
const ADV_POST_WORDS: &[&str] = &[
    "today",
    "again",
    "together",
    "there",
    "here",
    "tonight",
    "yesterday",
    "early",
    "late",
    "twice",
    "alone",
    "everywhere",
];
const PREPS: &[&str] = &[
    "in", "on", "with", "near", "from", "under", "behind", "over", "into", "after", "before",
    "without", "beside", "across", "through", "along", "inside", "toward",
];
const CONJS: &[&str] = &[
    "and", "but", "so", "while", "because", "although", "until", "when",
];

/// Sentence ends: every (end delimiter, next sentence's first slot) pair, weights multiplied
/// out. ". " continues the line, ".\n" ends it.
macro_rules! end_edges {
    ($q:expr $(, $extra:expr)* $(,)?) => {
        &[
            (". ", DETC, $q * 0.74 * 0.55), (". ", NAME, $q * 0.74 * 0.25), (". ", PRON, $q * 0.74 * 0.20),
            (".\n", DETC, $q * 0.16 * 0.55), (".\n", NAME, $q * 0.16 * 0.25), (".\n", PRON, $q * 0.16 * 0.20),
            ("! ", DETC, $q * 0.05 * 0.55), ("! ", NAME, $q * 0.05 * 0.25), ("! ", PRON, $q * 0.05 * 0.20),
            ("? ", DETC, $q * 0.05 * 0.55), ("? ", NAME, $q * 0.05 * 0.25), ("? ", PRON, $q * 0.05 * 0.20),
            $($extra),*
        ]
    };
}

/// The grammar: slot `i` is `SLOTS[i]`.
pub const SLOTS: &[Slot] = &[
    Slot {
        name: "subject determiner (capitalized)",
        words: DETC_WORDS,
        edges: &[(" ", ADJ_S, 0.3), (" ", NOUN_S, 0.7)],
    },
    Slot {
        name: "subject name",
        words: NAMES,
        edges: &[(" ", ADV_PRE, 0.12), (" ", VERB, 0.88)],
    },
    Slot {
        name: "subject pronoun (capitalized)",
        words: PRON_WORDS,
        edges: &[(" ", ADV_PRE, 0.12), (" ", VERB, 0.88)],
    },
    Slot {
        name: "subject adjective",
        words: ADJECTIVES,
        edges: &[(" ", NOUN_S, 1.0)],
    },
    Slot {
        name: "subject noun",
        words: NOUNS,
        edges: &[(" ", ADV_PRE, 0.12), (" ", VERB, 0.88)],
    },
    Slot {
        name: "adverb before the verb",
        words: ADV_PRE_WORDS,
        edges: &[(" ", VERB, 1.0)],
    },
    Slot {
        name: "verb",
        words: VERBS,
        edges: end_edges!(
            0.12,
            (" ", DET, 0.55),
            (" ", NAME_O, 0.12),
            (" ", PREP, 0.13),
            (" ", ADV_POST, 0.08),
        ),
    },
    Slot {
        name: "object determiner",
        words: DET_WORDS,
        edges: &[(" ", ADJ_O, 0.3), (" ", NOUN_O, 0.7)],
    },
    Slot {
        name: "object adjective",
        words: ADJECTIVES,
        edges: &[(" ", NOUN_O, 1.0)],
    },
    Slot {
        name: "object noun",
        words: NOUNS,
        edges: end_edges!(
            0.55,
            (" ", PREP, 0.2),
            (" ", ADV_POST, 0.1),
            (", ", CONJ, 0.15),
        ),
    },
    Slot {
        name: "object name",
        words: NAMES,
        edges: end_edges!(
            0.55,
            (" ", PREP, 0.2),
            (" ", ADV_POST, 0.1),
            (", ", CONJ, 0.15),
        ),
    },
    Slot {
        name: "preposition",
        words: PREPS,
        edges: &[(" ", DET, 0.85), (" ", NAME_O, 0.15)],
    },
    Slot {
        name: "adverb after the object",
        words: ADV_POST_WORDS,
        edges: end_edges!(0.8, (", ", CONJ, 0.2)),
    },
    Slot {
        name: "conjunction",
        words: CONJS,
        edges: &[(" ", PRON_L, 0.4), (" ", NAME, 0.3), (" ", DET_S, 0.3)],
    },
    Slot {
        name: "subject pronoun (after a conjunction)",
        words: PRON_L_WORDS,
        edges: &[(" ", ADV_PRE, 0.12), (" ", VERB, 0.88)],
    },
    Slot {
        name: "subject determiner (after a conjunction)",
        words: DET_WORDS,
        edges: &[(" ", ADJ_S, 0.3), (" ", NOUN_S, 0.7)],
    },
];
