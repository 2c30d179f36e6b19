//! The tokenizer, built with the `tokenizers` crate from GGUF metadata (or read from a
//! Hugging Face `tokenizer.json`), plus ChatML prompt formatting and streaming decode.
//!
//! For GGUF's `gpt2` tokenizer model the vocabulary and merges come from
//! `tokenizer.ggml.tokens` / `.merges`; tokens of type 3 (control) become special tokens,
//! matched whole before pre-tokenization. The `smollm` pre-tokenizer splits digits one at a
//! time before the GPT-2 byte-level regex; no BOS token is added.

use crate::config::meta_str;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, Value};
use std::path::Path;
use std::sync::Arc;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::AddedToken;
use tokenizers::SplitDelimiterBehavior;

/// llama.cpp's token type for control tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;
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

/// Llama 3's split pattern (GGUF pre-tokenizer `llama-bpe`): digits in runs of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (GGUF pre-tokenizer `qwen2`): as Llama 3's, one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = meta_str(file, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer model {model:?} is not supported (only gpt2 BPE)"
            )));
        }
        let strings = |key: &str| -> Result<&[String]> {
            file.get(key)
                .ok_or_else(|| tok_err(format!("{key} is missing")))?
                .as_strs()
                .ok_or_else(|| tok_err(format!("{key} is not an array of strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(format!("bad merge {m:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        // Pre-tokenizers implemented: GPT-2's byte-level rule (`gpt2`, and files that name
        // none), SmolLM's (digits split one by one first), and the split patterns of Llama 3
        // (`llama-bpe`) and Qwen2 (`qwen2`) as their tokenizer.json files state them. Any
        // other rule splits text differently: refused, not approximated.
        let pre = match file.get("tokenizer.ggml.pre") {
            None => "default",
            Some(v) => v
                .as_str()
                .ok_or_else(|| tok_err("tokenizer.ggml.pre is not a string"))?,
        };
        let split = match pre {
            "default" | "gpt2" | "smollm" => None,
            "llama-bpe" => Some(LLAMA3_SPLIT),
            "qwen2" => Some(QWEN2_SPLIT),
            _ => {
                return Err(tok_err(format!(
                    "pre-tokenizer {pre:?} (tokenizer.ggml.pre) is not supported yet (gpt2, smollm, llama-bpe, qwen2)"
                )))
            }
        };
        let byte_level = ByteLevel::new(false, true, true);
        if let Some(pattern) = split {
            let split = Split::new(
                SplitPattern::Regex(pattern.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?;
            // The pattern does the splitting; the byte-level step only maps bytes.
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
        } else if pre == "smollm" {
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        } else {
            inner.with_pre_tokenizer(Some(byte_level));
        }
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        if let Some(types) = file
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
        {
            let special: Vec<AddedToken> = tokens
                .iter()
                .enumerate()
                .filter(|&(i, _)| types.u64_at(i) == Some(TOKEN_TYPE_CONTROL))
                .map(|(_, t)| AddedToken::from(t.as_str(), true))
                .collect();
            inner.add_special_tokens(&special);
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match file.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .filter(|&t| (t as usize) < tokens.len())
                    .map(Some)
                    .ok_or_else(|| tok_err(format!("{key} {v:?} is not a token id"))),
            }
        };
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(tok_err(format!(
                    "tokenizer.ggml.add_bos_token {v:?} is not a boolean"
                )))
            }
        };
        if add_bos && bos.is_none() {
            return Err(tok_err(
                "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing",
            ));
        }
        let mut end_of_turn = Vec::new();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(t) = id(key)?.filter(|&t| Some(t) != eos && !end_of_turn.contains(&t)) {
                end_of_turn.push(t);
            }
        }
        let template = file
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .unwrap_or("");
        Ok(Self {
            inner,
            eos,
            end_of_turn,
            bos,
            add_bos,
            default_system: default_system_prompt(template),
            chat_template: (!template.is_empty()).then(|| template.to_string()),
        })
    }

    /// Reads a Hugging Face `tokenizer.json`; EOS is `<|im_end|>` or `</s>` if present.
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
        let eos = [IM_END, "</s>", "<|endoftext|>"]
            .iter()
            .find_map(|t| inner.token_to_id(t));
        Ok(Self {
            inner,
            eos,
            end_of_turn: Vec::new(),
            bos: None,
            add_bos: false,
            default_system: None,
            chat_template: None,
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
        }
    }

    /// The model's chat template (Jinja source), if its file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The text of token `id` (special tokens included), if it exists.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner
            .id_to_token(id)
            .map(|_| self.inner.decode(&[id], false).unwrap_or_default())
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

/// The literal system turn a ChatML Jinja template inserts when the conversation has none
/// (`'<|im_start|>system\n...<|im_end|>`), if any.
fn default_system_prompt(template: &str) -> Option<String> {
    const START: &str = "'<|im_start|>system\n";
    let at = template.find(START)? + START.len();
    let rest = &template[at..];
    let end = rest.find(IM_END)?;
    Some(rest[..end].to_string())
}

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

    #[test]
    fn default_system_from_smollm_template() {
        let t = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}";
        assert_eq!(default_system_prompt(t).as_deref(), Some("You are helpful"));
        assert_eq!(default_system_prompt("{{ messages }}"), None);
    }
}
