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

use crate::config::meta_str;
use crate::error::{ModelError, Result};
use crate::gguf::{Array, GgufFile, Value};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::AddedToken;
use tokenizers::Decoder;
use tokenizers::SplitDelimiterBehavior;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_UNKNOWN: u64 = 2;
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;
/// The end-of-turn token of ChatML.
const IM_END: &str = "<|im_end|>";
/// SentencePiece's stand-in for a space.
const METASPACE: &str = "\u{2581}";
/// The most bytes read from `tokenizer_config.json`, `generation_config.json` or
/// `chat_template.jinja`.
const CONFIG_CAP: u64 = 16 << 20;

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

/// Llama 3's split pattern (GGUF pre-tokenizer `llama-bpe`): digits in runs of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (GGUF pre-tokenizer `qwen2`): as Llama 3's, one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A GGUF boolean that may be absent.
fn gguf_bool(file: &GgufFile, key: &str, default: bool) -> Result<bool> {
    match file.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(tok_err(format!("{key} {v:?} is not a boolean"))),
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's metadata (`tokenizer.ggml.model`
    /// `gpt2` or `llama`).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = meta_str(file, "tokenizer.ggml.model")?;
        let spm = match model {
            "gpt2" => false,
            "llama" => true,
            _ => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer model {model:?} is not supported (gpt2 BPE, llama SentencePiece)"
                )))
            }
        };
        let tokens = file
            .get("tokenizer.ggml.tokens")
            .ok_or_else(|| tok_err("tokenizer.ggml.tokens is missing"))?
            .as_strs()
            .ok_or_else(|| tok_err("tokenizer.ggml.tokens is not an array of strings"))?;
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
        // llama.cpp's defaults for a SentencePiece vocabulary, where the vocabulary has them.
        let default = |t: u32| (spm && (t as usize) < tokens.len()).then_some(t);
        let eos = id("tokenizer.ggml.eos_token_id")?.or(default(2));
        let bos = id("tokenizer.ggml.bos_token_id")?.or(default(1));
        let inner = if spm {
            let unk = id("tokenizer.ggml.unknown_token_id")?.or(default(0));
            spm_tokenizer(file, tokens, [unk, bos, eos])?
        } else {
            gpt2_tokenizer(file, tokens)?
        };
        // llama.cpp adds BOS for SentencePiece vocabularies unless the file says otherwise.
        let add_bos = gguf_bool(file, "tokenizer.ggml.add_bos_token", spm)?;
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
            eos,
            end_of_turn,
            bos,
            add_bos,
            default_system: default_system_prompt(template),
            chat_template: (!template.is_empty()).then(|| template.to_string()),
            piece_decoder: piece_decoder(&inner),
            inner,
        })
    }

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

    /// Reads a Hugging Face model directory's tokenizer: `tokenizer.json` (as
    /// [`Tokenizer::from_file`]), then, where present:
    ///
    /// - `tokenizer_config.json`: `bos_token` and `eos_token` (a string or an object with
    ///   a `content` string), `add_bos_token`, `chat_template` (a string, or a list of
    ///   `{name, template}` of which the one named `default` is taken);
    /// - `chat_template.jinja`: the chat template, in place of the config's (as
    ///   transformers reads it);
    /// - `generation_config.json`: `eos_token_id` (an id or a list of ids: the tokenizer's
    ///   EOS stays EOS, or the first of the list where the tokenizer names none, and every
    ///   other id ends a turn, as Llama 3's `<|eot_id|>` does), `bos_token_id`.
    ///
    /// A `tokenizer.json` whose post-processor starts every sequence with a special token
    /// (Llama 3's `<|begin_of_text|>`) gets that token as BOS, added by
    /// [`Tokenizer::encode_prompt`], unless `add_bos_token` says otherwise. Without any EOS
    /// from the configuration, `<|im_end|>`, `</s>` or `<|endoftext|>` is EOS if present.
    ///
    /// `Ok(None)` when the directory has no `tokenizer.json`. A config file over 16 MiB, not
    /// JSON, with a value of the wrong type or a token outside the vocabulary is an error
    /// naming the file and the key.
    pub fn from_hf_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        let mut tok = Self::from_file(&path)?;
        let vocab = tok.inner.get_vocab_size(true);
        let post_bos = template_bos(&tok.inner, &path)?;

        let path = dir.join("tokenizer_config.json");
        let config = read_config(&path)?;
        let cfg = ConfigFile {
            path: &path,
            json: config.as_ref(),
        };
        let token = |key: &str| -> Result<Option<u32>> {
            cfg.token_content(key)?
                .map(|t| {
                    tok.inner.token_to_id(&t).ok_or_else(|| {
                        cfg.err(key, &format!("{t:?} is not a token of tokenizer.json"))
                    })
                })
                .transpose()
        };
        let cfg_bos = token("bos_token")?;
        let cfg_eos = token("eos_token")?;
        let cfg_add_bos = cfg.bool("add_bos_token")?;
        let mut template = cfg.chat_template()?;
        let jinja = dir.join("chat_template.jinja");
        if let Some(bytes) = read_capped(&jinja)? {
            template = Some(
                String::from_utf8(bytes)
                    .map_err(|e| tok_err(format!("{}: not UTF-8 ({e})", jinja.display())))?,
            );
        }

        let path = dir.join("generation_config.json");
        let generation = read_config(&path)?;
        let gen = ConfigFile {
            path: &path,
            json: generation.as_ref(),
        };
        let gen_eos = gen.ids("eos_token_id", vocab)?;
        let gen_bos = match gen.ids("bos_token_id", vocab)?.as_slice() {
            [] => None,
            [b] => Some(*b),
            _ => return Err(gen.err("bos_token_id", &"is a list, not one token id")),
        };

        tok.bos = cfg_bos.or(post_bos).or(gen_bos);
        tok.add_bos = cfg_add_bos.unwrap_or(post_bos.is_some());
        if tok.add_bos && tok.bos.is_none() {
            return Err(cfg.err("add_bos_token", &"is true but no BOS token is named"));
        }
        if cfg_eos.is_some() || !gen_eos.is_empty() {
            tok.eos = cfg_eos.or(gen_eos.first().copied());
        }
        tok.end_of_turn = Vec::new();
        for t in gen_eos {
            if Some(t) != tok.eos && !tok.end_of_turn.contains(&t) {
                tok.end_of_turn.push(t);
            }
        }
        tok.default_system = template.as_deref().and_then(default_system_prompt);
        tok.chat_template = template.filter(|t| !t.is_empty());
        Ok(Some(tok))
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

    /// Writes the tokenizer as a Hugging Face directory holds it: `tokenizer.json`, with
    /// BOS, EOS, `add_bos_token` and the chat template in `tokenizer_config.json`, and
    /// every end-of-sequence id in `generation_config.json` — what
    /// [`Tokenizer::from_hf_dir`] reads back.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let write = |name: &str, v: &serde_json::Value| {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(v).map_err(tok_err)?;
            std::fs::write(&path, text).map_err(|e| ModelError::io(path, e))
        };
        self.inner
            .save(dir.join("tokenizer.json"), false)
            .map_err(tok_err)?;
        let text = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        let mut config = serde_json::json!({ "add_bos_token": self.add_bos });
        for (key, id) in [("bos_token", self.bos), ("eos_token", self.eos)] {
            if let Some(t) = text(id) {
                config[key] = t.into();
            }
        }
        if let Some(t) = &self.chat_template {
            config["chat_template"] = t.as_str().into();
        }
        write("tokenizer_config.json", &config)?;
        let ends: Vec<u32> = self.eos.iter().chain(&self.end_of_turn).copied().collect();
        let mut generation = serde_json::json!({ "eos_token_id": ends });
        if let Some(b) = self.bos {
            generation["bos_token_id"] = b.into();
        }
        write("generation_config.json", &generation)
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

/// The byte-level BPE tokenizer of GGUF's `gpt2` model.
fn gpt2_tokenizer(file: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
    let merges = file
        .get("tokenizer.ggml.merges")
        .ok_or_else(|| tok_err("tokenizer.ggml.merges is missing"))?
        .as_strs()
        .ok_or_else(|| tok_err("tokenizer.ggml.merges is not an array of strings"))?
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
    Ok(inner)
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

/// The SentencePiece BPE tokenizer of GGUF's `llama` model, built as Hugging Face's
/// `LlamaConverter` builds a legacy Llama `tokenizer.json`; `unk_bos_eos` are the ids after
/// llama.cpp's defaults.
fn spm_tokenizer(
    file: &GgufFile,
    tokens: &[String],
    unk_bos_eos: [Option<u32>; 3],
) -> Result<tokenizers::Tokenizer> {
    const SCORES: &str = "tokenizer.ggml.scores";
    const TYPES: &str = "tokenizer.ggml.token_type";
    let n = tokens.len();
    let scores = match file.get(SCORES) {
        None => {
            return Err(tok_err(format!(
                "{SCORES} is missing (a llama tokenizer ranks its merges by them)"
            )))
        }
        Some(Value::Array(Array::F64(s))) => s,
        Some(_) => return Err(tok_err(format!("{SCORES} is not an array of floats"))),
    };
    if scores.len() != n {
        return Err(tok_err(format!(
            "{SCORES} has {} entries for {n} tokens",
            scores.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(tok_err(format!("{SCORES}[{i}] is NaN")));
    }
    let types = match file.get(TYPES) {
        None => None,
        Some(Value::Array(a @ (Array::U64(_) | Array::I64(_)))) if a.len() == n => Some(a),
        Some(_) => {
            return Err(tok_err(format!(
                "{TYPES} is not an array of {n} integers (one per token)"
            )))
        }
    };
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        // `i` < n, and the GGUF reader bounds n by the file's length.
        let i = u32::try_from(i).map_err(tok_err)?;
        if let Some(first) = ids.insert(t, i) {
            return Err(tok_err(format!(
                "tokenizer.ggml.tokens has {t:?} twice (ids {first} and {i})"
            )));
        }
    }
    let bytes = (0..=255u8)
        .filter(|b| ids.contains_key(format!("<0x{b:02X}>").as_str()))
        .count();
    if bytes != 0 && bytes != 256 {
        return Err(tok_err(format!(
            "tokenizer.ggml.tokens has {bytes} of the 256 byte tokens <0x00>..<0xFF>: byte fallback needs all of them"
        )));
    }
    let [unk, bos, eos] = unk_bos_eos;
    let unk = unk.ok_or_else(|| {
        tok_err("tokenizer.ggml.unknown_token_id is missing and the vocabulary is empty")
    })?;
    let merges = spm_merges(tokens, scores, &ids);
    drop(ids);
    let vocab: Vocab = tokens.iter().cloned().zip(0u32..).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(tokens[unk as usize].clone())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(tok_err)?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let add_space_prefix = gguf_bool(file, "tokenizer.ggml.add_space_prefix", true)?;
    if gguf_bool(file, "tokenizer.ggml.remove_extra_whitespaces", false)? {
        return Err(tok_err(
            "tokenizer.ggml.remove_extra_whitespaces is not supported (it changes the text before tokenizing)",
        ));
    }
    let mut normalizer: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizer.push(Prepend::new(METASPACE.into()).into());
    }
    normalizer.push(Replace::new(" ", METASPACE).map_err(tok_err)?.into());
    inner.with_normalizer(Some(tokenizers::normalizers::Sequence::new(normalizer)));
    let mut decoder: Vec<DecoderWrapper> = vec![
        Replace::new(METASPACE, " ").map_err(tok_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoder.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(tokenizers::decoders::sequence::Sequence::new(decoder)));
    // Control and unknown tokens are special (matched whole in the text, before
    // normalization); user-defined ones are added tokens. Without token types, the UNK,
    // BOS and EOS tokens are the special ones (as transformers' GGUF converter has it).
    let type_of = |i: usize| types.and_then(|a| a.u64_at(i));
    let special: Vec<AddedToken> = match types {
        Some(_) => (0..n)
            .filter(|&i| matches!(type_of(i), Some(TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN)))
            .map(|i| AddedToken::from(tokens[i].as_str(), true))
            .collect(),
        None => [Some(unk), bos, eos]
            .into_iter()
            .flatten()
            .map(|i| AddedToken::from(tokens[i as usize].as_str(), true))
            .collect(),
    };
    inner.add_special_tokens(&special);
    let user: Vec<AddedToken> = (0..n)
        .filter(|&i| type_of(i) == Some(TOKEN_TYPE_USER_DEFINED))
        .map(|i| AddedToken::from(tokens[i].as_str(), false).normalized(false))
        .collect();
    inner.add_tokens(&user);
    Ok(inner)
}

/// BPE merges from a SentencePiece vocabulary, as transformers' `generate_merges` derives
/// them: every split of a token into two tokens is a merge, ranked by the whole token's
/// score (highest first), then by the lengths in characters of the left and the right part
/// (longest first); ties keep the vocabulary's order, one token's splits ordered by the ids
/// of their parts.
///
/// Each token's split points are tried once, and a part is looked up only when some token
/// has its length: the work is linear in the vocabulary's text for real vocabularies, and a
/// single huge token costs a scan, not a lookup per split point.
fn spm_merges(
    tokens: &[String],
    scores: &[f64],
    ids: &HashMap<&str, u32>,
) -> Vec<(String, String)> {
    struct Merge {
        score: f64,
        left_chars: usize,
        right_chars: usize,
        left: u32,
        right: u32,
    }
    let lengths: HashSet<usize> = tokens.iter().map(String::len).collect();
    let mut merges: Vec<Merge> = Vec::new();
    for (t, &score) in tokens.iter().zip(scores) {
        let start = merges.len();
        let chars = t.chars().count();
        for (left_chars, (at, _)) in t.char_indices().enumerate().skip(1) {
            if !lengths.contains(&at) || !lengths.contains(&(t.len() - at)) {
                continue;
            }
            if let (Some(&left), Some(&right)) = (ids.get(&t[..at]), ids.get(&t[at..])) {
                merges.push(Merge {
                    score,
                    left_chars,
                    right_chars: chars - left_chars,
                    left,
                    right,
                });
            }
        }
        merges[start..].sort_by_key(|m| (m.left, m.right));
    }
    // A stable sort: equal keys keep their order. Scores are not NaN.
    merges.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    merges
        .into_iter()
        .map(|m| {
            (
                tokens[m.left as usize].clone(),
                tokens[m.right as usize].clone(),
            )
        })
        .collect()
}

/// The token a `tokenizer.json` post-processor puts before every single sequence (Llama
/// 3's `<|begin_of_text|>`): a `TemplateProcessing` (alone or in a `Sequence`) whose
/// `single` template starts with a special token of one id.
fn template_bos(inner: &tokenizers::Tokenizer, path: &Path) -> Result<Option<u32>> {
    fn find(pp: &serde_json::Value) -> Option<&serde_json::Value> {
        match pp.get("type")?.as_str()? {
            "TemplateProcessing" => Some(pp),
            "Sequence" => pp.get("processors")?.as_array()?.iter().find_map(find),
            _ => None,
        }
    }
    let Some(pp) = inner.get_post_processor() else {
        return Ok(None);
    };
    let pp = serde_json::to_value(pp).map_err(tok_err)?;
    let Some(template) = find(&pp) else {
        return Ok(None);
    };
    let Some(name) = template
        .pointer("/single/0/SpecialToken/id")
        .and_then(serde_json::Value::as_str)
    else {
        return Ok(None);
    };
    let ids = template
        .get("special_tokens")
        .and_then(|s| s.get(name))
        .and_then(|s| s.get("ids"))
        .and_then(serde_json::Value::as_array);
    match ids.map(Vec::as_slice) {
        Some([id]) => {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .filter(|&i| (i as usize) < inner.get_vocab_size(true))
                .ok_or_else(|| {
                    tok_err(format!(
                        "{}: post_processor: special token {name:?} has id {id}, outside the vocabulary",
                        path.display()
                    ))
                })?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

/// A file's bytes, at most [`CONFIG_CAP`] of them; `None` if it does not exist.
fn read_capped(path: &Path) -> Result<Option<Vec<u8>>> {
    let bad = |e: &dyn std::fmt::Display| tok_err(format!("{}: {e}", path.display()));
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(&e)),
    };
    let mut bytes = Vec::new();
    file.take(CONFIG_CAP + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(&e))?;
    if bytes.len() as u64 > CONFIG_CAP {
        return Err(bad(&format!("larger than {} MiB", CONFIG_CAP >> 20)));
    }
    Ok(Some(bytes))
}

/// A JSON config file's object; `None` if the file does not exist.
fn read_config(path: &Path) -> Result<Option<serde_json::Value>> {
    let Some(bytes) = read_capped(path)? else {
        return Ok(None);
    };
    let bad = |e: &dyn std::fmt::Display| tok_err(format!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e))?;
    if !json.is_object() {
        return Err(bad(&"not a JSON object"));
    }
    Ok(Some(json))
}

/// One of a Hugging Face directory's JSON config files, maybe absent.
struct ConfigFile<'a> {
    path: &'a Path,
    json: Option<&'a serde_json::Value>,
}

impl ConfigFile<'_> {
    fn err(&self, key: &str, what: &dyn std::fmt::Display) -> ModelError {
        tok_err(format!("{}: {key} {what}", self.path.display()))
    }

    /// The key's value; `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.json?.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.err(key, &"is not a boolean"))
            })
            .transpose()
    }

    /// A token written as a string or as an `AddedToken` object (`{"content": ...}`).
    fn token_content(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(serde_json::Value::as_str))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        self.err(
                            key,
                            &"is neither a string nor an object with a string \"content\"",
                        )
                    })
            })
            .transpose()
    }

    /// `chat_template`: a string, or a list of `{name, template}` (the `default` one).
    fn chat_template(&self) -> Result<Option<String>> {
        const KEY: &str = "chat_template";
        let Some(v) = self.get(KEY) else {
            return Ok(None);
        };
        if let Some(s) = v.as_str() {
            return Ok(Some(s.to_string()));
        }
        let list = v
            .as_array()
            .ok_or_else(|| self.err(KEY, &"is neither a string nor a list of {name, template}"))?;
        let mut default = None;
        for entry in list {
            let field = |f: &str| entry.get(f).and_then(serde_json::Value::as_str);
            let (Some(name), Some(template)) = (field("name"), field("template")) else {
                return Err(self.err(KEY, &"has an entry without a string name and template"));
            };
            if name == "default" {
                default.get_or_insert_with(|| template.to_string());
            }
        }
        Ok(default)
    }

    /// Token ids written as one integer or a list of integers, each below `vocab`.
    fn ids(&self, key: &str, vocab: usize) -> Result<Vec<u32>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let one = |v: &serde_json::Value| {
            v.as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .filter(|&i| (i as usize) < vocab)
                .ok_or_else(|| {
                    self.err(
                        key,
                        &format!("{v} is not a token id (the vocabulary has {vocab})"),
                    )
                })
        };
        match v.as_array() {
            Some(list) => list.iter().map(one).collect(),
            None => Ok(vec![one(v)?]),
        }
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

    #[test]
    fn default_system_from_smollm_template() {
        let t = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}";
        assert_eq!(default_system_prompt(t).as_deref(), Some("You are helpful"));
        assert_eq!(default_system_prompt("{{ messages }}"), None);
    }
}
