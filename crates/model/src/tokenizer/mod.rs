//! The tokenizer, built with the `tokenizers` crate from GGUF metadata (or read from a
//! Hugging Face directory), plus ChatML prompt formatting and streaming decode.
//!
//! GGUF tokenizer models:
//!
//! - `gpt2` (byte-level BPE): the vocabulary and merges come from `tokenizer.ggml.tokens` /
//!   `.merges`; tokens of type 3 (control) become special tokens, matched whole before
//!   pre-tokenization. The pre-tokenizer is named by `tokenizer.ggml.pre` (the `smollm`
//!   one splits digits one at a time before the GPT-2 byte-level regex). No BOS token is
//!   added unless `tokenizer.ggml.add_bos_token` says so.
//! - `llama` (SentencePiece BPE: Llama 2, Mistral 7B, TinyLlama): built as Hugging Face's
//!   `LlamaConverter` builds a legacy Llama `tokenizer.json`. The merges are derived from
//!   the vocabulary and `tokenizer.ggml.scores` (every split of a token into two tokens,
//!   ranked by the token's score); characters outside the vocabulary fall back to the
//!   `<0x00>`..`<0xFF>` byte tokens. Text gets a leading "▁" (`add_space_prefix`, default
//!   true) and its spaces become "▁"; decoding strips that one leading space again.
//!   Control and unknown tokens are special, user-defined tokens added. As in llama.cpp,
//!   BOS/EOS/UNK default to ids 1/2/0 and `add_bos_token` to true.
//!
//! A Hugging Face directory ([`Tokenizer::from_hf_dir`]) adds what `tokenizer.json` does not
//! say: BOS/EOS tokens, `add_bos_token` and the chat template from
//! `tokenizer_config.json`, end-of-sequence ids from `generation_config.json`.

mod gguf;
mod gguf_meta;
mod hf_dir;
mod spm;
mod stream;

pub use stream::TokenStream;

use crate::error::{ModelError, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Decoder;

/// The end-of-turn token of ChatML.
const IM_END: &str = "<|im_end|>";

/// A text tokenizer with its end-of-sequence token and chat format.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos: Option<u32>,
    /// Other tokens that end a turn (a chat model's end-of-turn and end-of-message ids).
    end_of_turn: Vec<u32>,
    /// The beginning-of-sequence token, and whether a prompt starts with it.
    bos: Option<u32>,
    add_bos: bool,
    default_system: Option<String>,
    /// The model's chat template (Jinja), from the GGUF metadata, if it has one.
    chat_template: Option<String>,
    /// For one token's text, where the tokenizer's decoder would drop something that only
    /// makes sense for a whole text (SentencePiece's leading space): the decoder without it.
    piece_decoder: Option<DecoderWrapper>,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl std::fmt::Debug for Tokenizer {
    // The vocabulary and merges would be megabytes of output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Reads a Hugging Face `tokenizer.json`; EOS is `<|im_end|>`, `</s>` or
    /// `<|endoftext|>` if present.
    ///
    /// A malformed file is an error: the JSON is checked first, and a panic inside the
    /// `tokenizers` crate (some malformed sections reach an `unwrap` there) is caught and
    /// reported as one.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| tok_err(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| bad(&e))?;
        let inner = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>())
            .map_err(|_| bad(&"malformed tokenizer.json (the tokenizers crate panicked on it)"))?
            .map_err(|e| bad(&e))?;
        Ok(Self {
            eos: fallback_eos(&inner),
            end_of_turn: Vec::new(),
            bos: None,
            add_bos: false,
            default_system: None,
            chat_template: None,
            piece_decoder: piece_decoder(&inner),
            inner,
        })
    }

    /// A byte-level tokenizer without merges: token `i` is byte `i` (256 tokens), no
    /// end-of-sequence token, no chat template. For tests and for the `tiny` random model,
    /// whose vocabulary is 256.
    pub fn byte_level() -> Self {
        // GPT-2's byte-to-character map: printable bytes stand for themselves, the others
        // for 256, 257, ... in byte order.
        let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        let mut next = 256;
        let vocab: Vocab = (0..256u32)
            .map(|b| {
                let c = if printable(b) {
                    b
                } else {
                    next += 1;
                    next - 1
                };
                (char::from_u32(c).expect("below U+0200").to_string(), b)
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .build()
            .expect("a vocabulary without merges is valid");
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        Self {
            inner,
            eos: None,
            end_of_turn: Vec::new(),
            bos: None,
            add_bos: false,
            default_system: None,
            chat_template: None,
            piece_decoder: None,
        }
    }

    /// The model's chat template (Jinja source), if its file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The text of token `id` (special tokens included), if it exists: with its leading
    /// space, for a SentencePiece token that starts with one, although the decode of a
    /// whole text drops the first ("▁Paris" is " Paris").
    pub fn token_text(&self, id: u32) -> Option<String> {
        let token = self.inner.id_to_token(id)?;
        Some(match &self.piece_decoder {
            Some(d) => d.decode(vec![token]).unwrap_or_default(),
            None => self.inner.decode(&[id], false).unwrap_or_default(),
        })
    }

    /// Token ids of `text`; special tokens written in the text are recognized, no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// The end-of-sequence token, if the tokenizer names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The beginning-of-sequence token, if the tokenizer names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether [`Tokenizer::encode_prompt`] starts a prompt with the BOS token.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// A prompt's tokens: [`Tokenizer::encode`], after the BOS token when the model asks
    /// for one (`add_bos_token`) and the text does not already start with it (a chat
    /// template that writes `bos_token` itself), as llama.cpp does.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        match self.bos.filter(|_| self.add_bos) {
            Some(b) if ids.first() != Some(&b) => Ok(std::iter::once(b).chain(ids).collect()),
            _ => Ok(ids),
        }
    }

    /// Other tokens that end a turn as end-of-sequence does (GGUF `eot_token_id` and
    /// `eom_token_id`: Llama 3's `<|eot_id|>` and `<|eom_id|>`, for instance).
    pub fn end_of_turn_ids(&self) -> &[u32] {
        &self.end_of_turn
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` object (for saving as `tokenizer.json`).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// A one-turn ChatML prompt ending where the assistant's reply begins, with the model's
    /// default system prompt when its chat template has one.
    pub fn chat_prompt(&self, user: &str) -> String {
        let system = match &self.default_system {
            Some(sys) => format!("<|im_start|>system\n{sys}{IM_END}\n"),
            None => String::new(),
        };
        format!("{system}<|im_start|>user\n{user}{IM_END}\n<|im_start|>assistant\n")
    }
}

/// EOS by name, for a `tokenizer.json` whose configuration names none.
fn fallback_eos(inner: &tokenizers::Tokenizer) -> Option<u32> {
    [IM_END, "</s>", "<|endoftext|>"]
        .iter()
        .find_map(|t| inner.token_to_id(t))
}

/// The decoder for one token's text, where the tokenizer's decoder ends by stripping the
/// leading space of a whole text (SentencePiece's `Strip(" ", 1, 0)`): the same without
/// that strip.
fn piece_decoder(inner: &tokenizers::Tokenizer) -> Option<DecoderWrapper> {
    let Some(DecoderWrapper::Sequence(seq)) = inner.get_decoder() else {
        return None;
    };
    let (last, rest) = seq.get_decoders().split_last()?;
    match last {
        DecoderWrapper::Strip(s) if s.content == ' ' && s.start > 0 => {
            Some(tokenizers::decoders::sequence::Sequence::new(rest.to_vec()).into())
        }
        _ => None,
    }
}

/// The literal system turn a ChatML Jinja template inserts when the conversation has none
/// (`'<|im_start|>system\n...<|im_end|>`), if any.
fn default_system_prompt(template: &str) -> Option<String> {
    const START: &str = "'<|im_start|>system\n";
    let at = template.find(START)? + START.len();
    let rest = &template[at..];
    let end = rest.find(IM_END)?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_system_from_smollm_template() {
        let t = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}";
        assert_eq!(default_system_prompt(t).as_deref(), Some("You are helpful"));
        assert_eq!(default_system_prompt("{{ messages }}"), None);
    }
}
