//! One choice's text as tokens arrive: incremental detokenization, stop strings (never
//! split across tokens in what is returned) and the end-of-sequence token kept out of the
//! text.

use pagedattn_model::{ModelError, TokenStream, Tokenizer};
use std::sync::Arc;

/// What a push of tokens produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Piece {
    /// New text that is safe to send.
    pub text: String,
    /// Tokens of this push that count toward the completion (those after a stop string
    /// are dropped).
    pub tokens: usize,
    /// A stop string was found: the choice is finished and `text` ends before it.
    pub stopped: bool,
}

/// The text state of one choice.
#[derive(Debug)]
pub struct ChoiceText {
    detok: TokenStream,
    stops: Arc<[String]>,
    /// Tokens that end the choice and whose text is never shown (end-of-sequence and the
    /// model's end-of-turn ids, unless the request ignores them).
    ends: Arc<[u32]>,
    /// Decoded text not yet sent: it may be the start of a stop string.
    held: String,
    /// Bytes of text sent so far.
    pub sent: usize,
    /// Completion tokens so far.
    pub tokens: usize,
    /// Set once the choice has finished (`stop` or `length`).
    pub finish_reason: Option<&'static str>,
}

impl ChoiceText {
    /// A choice stopped by `stops` (and by `ends`, whose text is never shown).
    pub fn new(tokenizer: Arc<Tokenizer>, stops: Arc<[String]>, ends: Arc<[u32]>) -> Self {
        Self {
            detok: TokenStream::new(tokenizer),
            stops,
            ends,
            held: String::new(),
            sent: 0,
            tokens: 0,
            finish_reason: None,
        }
    }

    /// Decodes the text after `prompt`'s last tokens (see [`TokenStream::after`]).
    #[must_use]
    pub fn after_prompt(mut self, prompt: &[u32]) -> Self {
        self.detok = TokenStream::after(self.detok.tokenizer().clone(), prompt);
        self
    }

    /// Adds tokens; returns the text that can be sent now.
    pub fn push(&mut self, tokens: &[u32]) -> Result<Piece, ModelError> {
        let mut piece = Piece::default();
        for &t in tokens {
            piece.tokens += 1;
            if self.ends.contains(&t) {
                continue;
            }
            if let Some(s) = self.detok.push(t)? {
                self.held.push_str(&s);
            }
            if let Some(at) = self.find_stop() {
                self.held.truncate(at);
                piece.text = std::mem::take(&mut self.held);
                piece.stopped = true;
                self.sent += piece.text.len();
                self.tokens += piece.tokens;
                return Ok(piece);
            }
        }
        // Hold back the longest tail that could still grow into a stop string.
        let keep = self.stop_prefix_len();
        let cut = self.held.len() - keep;
        piece.text = self.held[..cut].to_string();
        self.held.drain(..cut);
        self.sent += piece.text.len();
        self.tokens += piece.tokens;
        Ok(piece)
    }

    /// At the end (length or end-of-sequence): everything held back, including a
    /// character the output cut in half (decoded lossily).
    pub fn finish(&mut self) -> Result<String, ModelError> {
        let rest = self.detok.flush()?;
        self.held.push_str(&rest);
        if let Some(at) = self.find_stop() {
            self.held.truncate(at);
        }
        let text = std::mem::take(&mut self.held);
        self.sent += text.len();
        Ok(text)
    }

    /// Byte offset in `held` of the earliest stop string.
    fn find_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a stop string.
    fn stop_prefix_len(&self) -> usize {
        let mut best = 0;
        for s in self.stops.iter() {
            let max = (s.len() - 1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && s.starts_with(&self.held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(stops: &[&str]) -> ChoiceText {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_string()).collect();
        ChoiceText::new(
            Arc::new(Tokenizer::byte_level()),
            stops.into(),
            Arc::from([0]),
        )
    }

    fn bytes(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
    }

    #[test]
    fn a_stop_string_split_across_tokens_is_never_sent() {
        let mut c = choice(&["END"]);
        let mut sent = String::new();
        let mut stopped = false;
        for chunk in ["hello E", "N", "D and more"] {
            let p = c.push(&bytes(chunk)).unwrap();
            assert!(
                !p.text.contains('E'),
                "{:?} sent part of the stop string",
                p.text
            );
            sent.push_str(&p.text);
            if p.stopped {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(sent, "hello ");
        // Tokens after the stop string are not counted: "hello " + "END" = 9 tokens.
        assert_eq!(c.tokens, 9);
    }

    #[test]
    fn held_text_that_does_not_become_a_stop_is_released() {
        let mut c = choice(&["STOP"]);
        let a = c.push(&bytes("aST")).unwrap();
        assert_eq!(a.text, "a");
        let b = c.push(&bytes("x")).unwrap();
        assert_eq!(b.text, "STx");
        assert!(!b.stopped);
        let c2 = c.push(&bytes("ST")).unwrap();
        assert_eq!(c2.text, "");
        assert_eq!(c.finish().unwrap(), "ST");
    }

    #[test]
    fn eos_is_counted_but_not_shown_and_utf8_is_never_broken() {
        let mut c = choice(&[]);
        let mut ids = bytes("é");
        ids.push(0);
        let first = c.push(&ids[..1]).unwrap();
        assert_eq!((first.text.as_str(), first.tokens), ("", 1));
        let rest = c.push(&ids[1..]).unwrap();
        assert_eq!((rest.text.as_str(), rest.tokens), ("é", 2));
        assert_eq!(c.finish().unwrap(), "");
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let mut c = choice(&["b", "xyz", "a b"]);
        let p = c.push(&bytes("xa bc")).unwrap();
        assert!(p.stopped);
        assert_eq!(p.text, "x");
        assert_eq!(p.tokens, 4);
    }
}
