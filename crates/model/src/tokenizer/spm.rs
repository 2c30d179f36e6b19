//! GGUF's `llama` tokenizer model: SentencePiece BPE with byte fallback (Llama 2,
//! Mistral 7B, TinyLlama), built as Hugging Face's `LlamaConverter` builds a legacy Llama
//! `tokenizer.json`.

use super::gguf_meta::{
    gguf_bool, TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_USER_DEFINED,
};
use super::tok_err;
use crate::error::Result;
use crate::gguf::{Array, GgufFile, Value};
use std::collections::{HashMap, HashSet};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::AddedToken;

/// SentencePiece's stand-in for a space.
const METASPACE: &str = "\u{2581}";

/// The SentencePiece BPE tokenizer of GGUF's `llama` model, built as Hugging Face's
/// `LlamaConverter` builds a legacy Llama `tokenizer.json`; `unk_bos_eos` are the ids after
/// llama.cpp's defaults.
pub(super) fn spm_tokenizer(
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
