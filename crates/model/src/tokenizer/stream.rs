//! Streaming decode of generated tokens.

use super::Tokenizer;
use crate::error::Result;
use std::sync::Arc;

/// Turns generated token ids into text pieces as they arrive, in O(1) amortized time per
/// token: each push decodes only a short window of recent tokens, never the whole output.
///
/// Byte-level BPE can split a UTF-8 character across tokens, and a token's text can depend
/// on its neighbours (a leading space, a byte-fallback run), so the window starts a few
/// tokens back (`prefix`), and new text is released only once the window decodes cleanly
/// (no trailing U+FFFD): a split character is held back, never emitted broken. The same
/// scheme vLLM and TGI use (`prefix_offset` / `read_offset`).
#[derive(Debug, Clone)]
pub struct TokenStream {
    tokenizer: Arc<Tokenizer>,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// Tokens before this have been released as text.
    read: usize,
}

impl TokenStream {
    /// An empty stream.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// A stream whose text is decoded after `context` (a prompt's tokens; the last few
    /// are kept), as vLLM and llama.cpp decode a completion: a SentencePiece token's
    /// leading space, which a decode at the start of a text strips, is kept ("The capital
    /// of France is" continues with " Paris", not "Paris"). A tail that does not decode to
    /// whole characters is not used.
    pub fn after(tokenizer: Arc<Tokenizer>, context: &[u32]) -> Self {
        const KEPT: usize = 4;
        let tail = &context[context.len().saturating_sub(KEPT)..];
        let clean = tokenizer
            .decode(tail)
            .is_ok_and(|t| !t.ends_with('\u{fffd}'));
        let ids = if clean { tail.to_vec() } else { Vec::new() };
        Self {
            tokenizer,
            read: ids.len(),
            ids,
            prefix: 0,
        }
    }

    /// The tokenizer this stream decodes with.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Adds a token; returns the new text, if any is complete.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let window = &self.ids[self.prefix..];
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = self.tokenizer.decode(window)?;
        if text.len() <= before.len()
            || text.ends_with('\u{fffd}')
            || !text.is_char_boundary(before.len())
        {
            return Ok(None);
        }
        let piece = text[before.len()..].to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        // The tokens before the window are never decoded again.
        if self.prefix > 1024 {
            self.ids.drain(..self.prefix);
            self.read -= self.prefix;
            self.prefix = 0;
        }
        Ok(Some(piece))
    }

    /// Whatever is still held back (an incomplete character at the end of the output),
    /// decoded lossily; empty if nothing is.
    pub fn flush(&mut self) -> Result<String> {
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = self.tokenizer.decode(&self.ids[self.prefix..])?;
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(text.get(before.len()..).unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte is a token, so every multi-byte character is split across tokens.
    fn bytes_tokenizer() -> Arc<Tokenizer> {
        Arc::new(Tokenizer::byte_level())
    }

    #[test]
    fn streaming_decode_never_splits_a_character() {
        let tok = bytes_tokenizer();
        let text = "héllo  wörld 東京 🦀🎉 a\tb\n\n  end";
        let ids = tok.encode(text).unwrap();
        assert!(
            ids.len() > text.chars().count(),
            "bytes must split characters"
        );
        let mut stream = TokenStream::new(tok.clone());
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(id).unwrap() {
                assert!(!piece.contains('\u{fffd}'), "broken character in {piece:?}");
                out.push_str(&piece);
            }
        }
        out.push_str(&stream.flush().unwrap());
        assert_eq!(out, text);
    }

    #[test]
    fn streaming_decode_flushes_a_truncated_character_lossily() {
        let tok = bytes_tokenizer();
        let ids = tok.encode("ab🦀").unwrap();
        let mut stream = TokenStream::new(tok.clone());
        let mut out = String::new();
        for &id in &ids[..ids.len() - 1] {
            out.push_str(&stream.push(id).unwrap().unwrap_or_default());
        }
        assert_eq!(out, "ab");
        assert_eq!(stream.flush().unwrap(), "\u{fffd}");
    }

    #[test]
    fn streaming_decode_of_a_long_output_matches_the_whole_decode() {
        let tok = bytes_tokenizer();
        let text = "Grüße, 世界! ".repeat(400);
        let ids = tok.encode(&text).unwrap();
        let mut stream = TokenStream::new(tok.clone());
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&stream.push(id).unwrap().unwrap_or_default());
        }
        assert_eq!(out, text);
        // The window was trimmed: the stream does not keep the whole output.
        assert!(stream.ids.len() < ids.len());
    }
}
