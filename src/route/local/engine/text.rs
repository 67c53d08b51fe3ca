//! Turns the bytes of sampled tokens into text deltas.
//!
//! Invariants: every delta is valid UTF-8 (a token piece may end inside a multi-byte character;
//! those bytes wait for the next piece), no delta ever contains a stop string or the part of the
//! text after it, and text that could still become the start of a stop string is held back until
//! it either completes the stop string (and is dropped) or can no longer do so (and is emitted).

/// What the caller should do after a piece was pushed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    /// Emit this text (possibly empty) and keep generating.
    Continue(String),
    /// A stop string was found: emit this text (possibly empty) and finish with `Stop`.
    Stopped(String),
}

/// Per-sequence text assembler: UTF-8 reassembly plus stop-string hold-back.
#[derive(Debug)]
pub(super) struct TextStream {
    /// Bytes of an incomplete UTF-8 character at the end of the last piece (at most 3).
    bytes: Vec<u8>,
    /// Decoded text not yet emitted because it could be the start of a stop string.
    held: String,
    /// Non-empty stop strings.
    stops: Vec<String>,
}

impl TextStream {
    /// A stream that ends on any of `stops` (empty strings are ignored).
    pub(super) fn new(stops: &[String]) -> Self {
        Self {
            bytes: Vec::new(),
            held: String::new(),
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    /// Adds the bytes of one token and returns the text that is safe to emit now.
    pub(super) fn push(&mut self, piece: &[u8]) -> Push {
        self.bytes.extend_from_slice(piece);
        self.decode_complete_chars();
        if let Some(at) = self.first_stop() {
            self.held.truncate(at);
            return Push::Stopped(std::mem::take(&mut self.held));
        }
        let keep = self.stop_prefix_suffix_len();
        let emit = self.held.len() - keep;
        Push::Continue(self.held.drain(..emit).collect())
    }

    /// Ends the stream (end of generation or token budget): everything held is emitted, and bytes
    /// of a character the model never completed become U+FFFD so the result stays valid UTF-8.
    pub(super) fn finish(mut self) -> String {
        if !self.bytes.is_empty() {
            self.held.push_str(&String::from_utf8_lossy(&self.bytes));
        }
        self.held
    }

    /// Moves every complete character from `bytes` to `held`; invalid sequences become U+FFFD,
    /// an incomplete sequence at the end stays in `bytes`.
    fn decode_complete_chars(&mut self) {
        loop {
            match std::str::from_utf8(&self.bytes) {
                Ok(text) => {
                    self.held.push_str(text);
                    self.bytes.clear();
                    return;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    self.held.push_str(&String::from_utf8_lossy(
                        self.bytes.get(..valid).unwrap_or_default(),
                    ));
                    match err.error_len() {
                        Some(bad) => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            self.bytes.drain(..valid + bad);
                        }
                        None => {
                            self.bytes.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Byte offset of the earliest stop string in `held`.
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn stop_prefix_suffix_len(&self) -> usize {
        for (start, _) in self.held.char_indices() {
            let tail = &self.held[start..];
            if self
                .stops
                .iter()
                .any(|stop| stop.len() > tail.len() && stop.starts_with(tail))
            {
                return tail.len();
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(stops: &[&str]) -> TextStream {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        TextStream::new(&stops)
    }

    #[test]
    fn plain_text_passes_through() {
        let mut s = stream(&[]);
        assert_eq!(s.push(b"Hello"), Push::Continue("Hello".into()));
        assert_eq!(s.push(b", world"), Push::Continue(", world".into()));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn split_multibyte_char_waits_for_its_last_byte() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut s = stream(&[]);
        assert_eq!(s.push(&euro[..1]), Push::Continue(String::new()));
        assert_eq!(s.push(&euro[1..2]), Push::Continue(String::new()));
        assert_eq!(s.push(&[euro[2], b'!']), Push::Continue("€!".into()));
    }

    #[test]
    fn four_byte_char_split_across_three_pieces() {
        let crab = "🦀".as_bytes();
        let mut s = stream(&[]);
        assert_eq!(s.push(&crab[..1]), Push::Continue(String::new()));
        assert_eq!(s.push(&crab[1..3]), Push::Continue(String::new()));
        assert_eq!(s.push(&crab[3..]), Push::Continue("🦀".into()));
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let mut s = stream(&[]);
        assert_eq!(
            s.push(&[b'a', 0xff, b'b']),
            Push::Continue("a\u{fffd}b".into())
        );
    }

    #[test]
    fn unfinished_char_at_end_is_replaced_not_emitted_raw() {
        let mut s = stream(&[]);
        assert_eq!(s.push(&[b'x', 0xe2, 0x82]), Push::Continue("x".into()));
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_string_inside_one_piece_cuts_the_text() {
        let mut s = stream(&["END"]);
        assert_eq!(s.push(b"abcENDdef"), Push::Stopped("abc".into()));
    }

    #[test]
    fn stop_string_across_pieces_is_held_back_then_dropped() {
        let mut s = stream(&["\n\n"]);
        assert_eq!(s.push(b"one\n"), Push::Continue("one".into()));
        assert_eq!(s.push(b"\ntwo"), Push::Stopped(String::new()));
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let mut s = stream(&["STOP"]);
        assert_eq!(s.push(b"a ST"), Push::Continue("a ".into()));
        assert_eq!(s.push(b"O"), Push::Continue(String::new()));
        assert_eq!(s.push(b"RM"), Push::Continue("STORM".into()));
    }

    #[test]
    fn held_prefix_is_flushed_at_finish() {
        let mut s = stream(&["STOP"]);
        assert_eq!(s.push(b"end ST"), Push::Continue("end ".into()));
        assert_eq!(s.finish(), "ST");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut s = stream(&["zz", "b"]);
        assert_eq!(s.push(b"abzz"), Push::Stopped("a".into()));
    }

    #[test]
    fn overlapping_prefix_holds_the_longest_candidate() {
        // With "aab", both "a" and "aa" could start the stop string: the longer one is held.
        let mut s = stream(&["aab"]);
        assert_eq!(s.push(b"xaa"), Push::Continue("x".into()));
        assert_eq!(s.push(b"a"), Push::Continue("a".into()));
        assert_eq!(s.push(b"b"), Push::Stopped(String::new()));
    }

    #[test]
    fn multibyte_stop_string_split_inside_a_char() {
        let mut s = stream(&["→"]);
        let arrow = "→".as_bytes();
        assert_eq!(s.push(&[b'x', arrow[0]]), Push::Continue("x".into()));
        assert_eq!(s.push(&arrow[1..]), Push::Stopped(String::new()));
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let mut s = stream(&[""]);
        assert_eq!(s.push(b"abc"), Push::Continue("abc".into()));
    }
}
