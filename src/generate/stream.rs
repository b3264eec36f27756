//! Turning generated token bytes into streamed text: UTF-8 across token boundaries and
//! stop strings.
//!
//! A byte-level token can end in the middle of a UTF-8 character, and a stop string can
//! span several tokens, so text is held back until it is safe: the bytes of an
//! incomplete character wait for the next token, and a tail that could still become a
//! stop string waits until it either completes one (and is dropped, together with
//! everything after it) or stops matching. The concatenation of what [`TextStream::push`]
//! and [`TextStream::finish`] emit is exactly the final text.

/// Incremental text with stop-string detection.
#[derive(Debug, Default)]
pub struct TextStream {
    buf: Vec<u8>,
    emitted: usize,
    stops: Vec<Vec<u8>>,
    stopped: Option<usize>,
}

/// Splits `bytes` into the longest prefix that can be emitted now as text (complete
/// characters; invalid bytes become U+FFFD) and returns it with the number of bytes used.
/// An incomplete character at the end is not consumed.
fn take_text(bytes: &[u8]) -> (String, usize) {
    let mut out = String::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match std::str::from_utf8(&bytes[pos..]) {
            Ok(s) => {
                out.push_str(s);
                pos = bytes.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                // Safe: valid_up_to marks a valid prefix.
                out.push_str(std::str::from_utf8(&bytes[pos..pos + good]).unwrap_or(""));
                pos += good;
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        pos += n;
                    }
                    None => break, // incomplete character at the end: wait
                }
            }
        }
    }
    (out, pos)
}

impl TextStream {
    /// A stream that stops at the first occurrence of any of `stops` (empty ones ignored).
    pub fn new(stops: &[String]) -> TextStream {
        TextStream {
            stops: stops
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            ..Default::default()
        }
    }

    /// True once a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// Adds a token's bytes; returns the text that is now safe to show.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        if self.stopped.is_some() {
            return String::new();
        }
        let old_len = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let longest = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        // A new match must end in the new bytes, so it starts after old_len - longest.
        let from = old_len.saturating_sub(longest.saturating_sub(1));
        let found = self
            .stops
            .iter()
            .filter_map(|s| {
                self.buf[from..]
                    .windows(s.len())
                    .position(|w| w == s.as_slice())
                    .map(|p| p + from)
            })
            .min();
        let limit = match found {
            Some(pos) => {
                self.stopped = Some(pos);
                self.buf.truncate(pos);
                let (text, _) = take_text(&self.buf[self.emitted..]);
                self.emitted = self.buf.len();
                return text;
            }
            None => {
                // Hold back the longest tail that is a proper prefix of a stop string.
                let mut hold = 0;
                for s in &self.stops {
                    for k in (1..s.len()).rev() {
                        if k <= self.buf.len() && k > hold && self.buf.ends_with(&s[..k]) {
                            hold = k;
                            break;
                        }
                    }
                }
                self.buf.len() - hold
            }
        };
        if limit <= self.emitted {
            return String::new();
        }
        let (text, used) = take_text(&self.buf[self.emitted..limit]);
        self.emitted += used;
        text
    }

    /// Emits whatever is held back (called when generation ends).
    pub fn finish(&mut self) -> String {
        let rest =
            String::from_utf8_lossy(&self.buf[self.emitted.min(self.buf.len())..]).into_owned();
        self.emitted = self.buf.len();
        rest
    }

    /// The final text (up to, not including, a stop string).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = TextStream::new(&stops);
        let mut chunks: Vec<String> = pieces.iter().map(|p| s.push(p)).collect();
        chunks.push(s.finish());
        (chunks, s.text(), s.stopped())
    }

    #[test]
    fn utf8_split_across_tokens_is_held_until_complete() {
        let e = "é".as_bytes(); // 2 bytes
        let (chunks, text, _) = run(&[], &[b"a", &e[..1], &e[1..], b"b"]);
        assert_eq!(chunks, vec!["a", "", "é", "b", ""]);
        assert_eq!(text, "aéb");
    }

    #[test]
    fn stop_string_across_tokens_is_cut_and_never_shown() {
        let (chunks, text, stopped) = run(&["\n\n"], &[b"ab\n", b"\ncd"]);
        assert!(stopped);
        assert_eq!(text, "ab");
        assert_eq!(chunks.concat(), "ab");
        assert_eq!(chunks[0], "ab");
        // A partial match that fails is released.
        let (chunks, text, stopped) = run(&["xyz"], &[b"ax", b"yq"]);
        assert!(!stopped);
        assert_eq!(chunks, vec!["a", "xyq", ""]);
        assert_eq!(text, "axyq");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (chunks, text, _) = run(&[], &[b"a\xffb"]);
        assert_eq!(chunks.concat(), "a\u{fffd}b");
        assert_eq!(text, "a\u{fffd}b");
    }
}
