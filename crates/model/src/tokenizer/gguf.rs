//! Tokenizers from GGUF metadata: the model `tokenizer.ggml.model` names (`gpt2`, or
//! `llama` in `spm.rs`), with `gpt2`'s pre-tokenizers.

use super::gguf_meta::{gguf_bool, TOKEN_TYPE_CONTROL};
use super::spm::spm_tokenizer;
use super::{default_system_prompt, piece_decoder, tok_err, Tokenizer};
use crate::config::meta_str;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, Value};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::AddedToken;
use tokenizers::SplitDelimiterBehavior;

/// Llama 3's split pattern (GGUF pre-tokenizer `llama-bpe`): digits in runs of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (GGUF pre-tokenizer `qwen2`): as Llama 3's, one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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
