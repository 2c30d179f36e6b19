//! GGUF SentencePiece tokenizers (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral 7B,
//! TinyLlama) against the Hugging Face `tokenizers` library: two vocab-only GGUF files
//! with a vocabulary trained by `sentencepiece` (`fixtures/tokenizers/`, written by
//! `scripts/reference/spm_fixtures.py`) must encode a corpus of tricky strings to the same
//! ids and decode them, and every prefix of them, to the same text. Then the defaults
//! llama.cpp applies, and every malformed piece of metadata as a typed error.

use pagedattn_model::gguf::{Array, GgufFile, Value};
use pagedattn_model::{ModelError, TokenStream, Tokenizer};
use proptest::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Deserialize)]
struct Fixture {
    files: BTreeMap<String, FileCases>,
}

#[derive(Deserialize)]
struct FileCases {
    vocab_size: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
    /// The decode of `ids[..k]` for every k, where the ids hold byte tokens.
    prefix_decodes: Option<Vec<String>>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/tokenizers/spm.json")).unwrap()
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizers")
        .join(name)
}

fn open(name: &str) -> GgufFile {
    GgufFile::open(&path(name)).unwrap()
}

fn load(name: &str) -> Tokenizer {
    Tokenizer::from_gguf(&open(name)).unwrap()
}

#[test]
fn encodes_and_decodes_as_the_tokenizers_library() {
    let mut checked = 0;
    let mut prefixes = 0;
    for (name, file) in fixture().files {
        let tok = load(&name);
        assert_eq!(tok.vocab_size(), file.vocab_size, "{name}");
        for case in file.cases {
            let what = format!("{name}: {:?}", case.text);
            assert_eq!(tok.encode(&case.text).unwrap(), case.ids, "{what}");
            assert_eq!(tok.decode(&case.ids).unwrap(), case.decoded, "{what}");
            for (k, want) in case.prefix_decodes.iter().flatten().enumerate() {
                assert_eq!(
                    &tok.decode(&case.ids[..k]).unwrap(),
                    want,
                    "{what}, {k} ids"
                );
                prefixes += 1;
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 56);
    // Some prefixes cut a character written as byte tokens: their decodes hold U+FFFD.
    assert!(prefixes > 300, "{prefixes}");
}

/// The fixture is not vacuous: multi-character pieces are merged, characters outside the
/// vocabulary are written as bytes, control tokens in the text are matched.
#[test]
fn the_fixture_exercises_merges_bytes_and_specials() {
    let tok = load("spm.gguf");
    let ids = tok.encode("Hello world").unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(tok.token_text(ids[0]).unwrap(), " Hello");
    let fx = fixture();
    let cases = &fx.files["spm.gguf"].cases;
    let cjk = cases.iter().find(|c| c.text.starts_with("CJK")).unwrap();
    let cut = cjk.prefix_decodes.as_ref().unwrap();
    assert!(cut.iter().any(|d| d.ends_with('\u{fffd}')));
    assert_eq!(tok.encode("<s>").unwrap(), [1]);
}

/// llama.cpp's defaults for a SentencePiece vocabulary: BOS is added (`add_bos_token`
/// absent), ids 1/2 are BOS/EOS; a prompt that starts with BOS (a Llama 2 chat template
/// writes `bos_token`) gets no second one. With `add_bos_token = false`, none is added.
#[test]
fn bos_is_added_once_by_default() {
    let tok = load("spm.gguf");
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert_eq!(tok.token_text(1).as_deref(), Some("<s>"));
    let ids = tok.encode("Hello world").unwrap();
    let prompt = tok.encode_prompt("Hello world").unwrap();
    assert_eq!((prompt[0], &prompt[1..]), (1, &ids[..]));
    let templated = tok.encode_prompt("<s>[INST] Hi [/INST]").unwrap();
    assert_eq!(templated, tok.encode("<s>[INST] Hi [/INST]").unwrap());
    assert_eq!(templated.iter().filter(|&&t| t == 1).count(), 1);
    assert!(tok.chat_template().unwrap().contains("bos_token"));

    let ties = load("spm-ties.gguf");
    // No id keys in the file: llama.cpp's defaults.
    assert_eq!((ties.bos_id(), ties.eos_id()), (Some(1), Some(2)));
    assert_eq!(
        ties.encode_prompt("Hello").unwrap(),
        ties.encode("Hello").unwrap()
    );
    // The ids keys override the defaults.
    let mut file = open("spm-ties.gguf");
    file.metadata
        .insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    file.metadata
        .insert("tokenizer.ggml.bos_token_id".into(), Value::U64(3));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.encode_prompt("Hello").unwrap()[0], 3);
}

/// Without the space prefix, text decodes without a stripped space; with it, the first
/// space of a decode goes but a token's own text keeps it.
#[test]
fn the_space_prefix_is_added_and_stripped() {
    let tok = load("spm.gguf");
    let plain = load("spm-ties.gguf");
    assert_eq!(tok.decode(&tok.encode(" x").unwrap()).unwrap(), " x");
    assert_eq!(plain.decode(&plain.encode(" x").unwrap()).unwrap(), " x");
    let world = plain.encode(" world").unwrap();
    assert_eq!(world.len(), 1);
    assert_eq!(tok.decode(&world).unwrap(), "world");
    assert_eq!(plain.decode(&world).unwrap(), " world");
    assert_eq!(tok.token_text(world[0]).unwrap(), " world");
}

/// Streaming decode of byte-fallback characters releases whole characters only, and the
/// whole stream equals the whole decode.
#[test]
fn streaming_decode_holds_back_cut_characters() {
    let tok = Arc::new(load("spm.gguf"));
    for text in ["CJK: 日本語のテキスト 🦀!", "emoji 👨‍👩‍👧 end", "a\n\tb  c"]
    {
        let ids = tok.encode(text).unwrap();
        let mut stream = TokenStream::new(tok.clone());
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(id).unwrap() {
                assert!(!piece.contains('\u{fffd}'), "{text:?}: {piece:?}");
                out.push_str(&piece);
            }
        }
        out.push_str(&stream.flush().unwrap());
        assert_eq!(out, tok.decode(&ids).unwrap(), "{text:?}");
    }
}

/// After a prompt, a stream keeps the first token's leading space (as vLLM and llama.cpp
/// do); at the start of a text the decoder strips it. Byte-level tokenizers have no such
/// strip: there the context changes nothing.
#[test]
fn a_stream_after_a_prompt_keeps_the_leading_space() {
    let tok = Arc::new(load("spm.gguf"));
    let prompt = tok.encode_prompt("The capital of France is").unwrap();
    let reply = tok.encode("the city").unwrap(); // "▁the▁city"
    let run = |mut stream: TokenStream| {
        let mut out = String::new();
        for &id in &reply {
            out.push_str(&stream.push(id).unwrap().unwrap_or_default());
        }
        out + &stream.flush().unwrap()
    };
    assert_eq!(run(TokenStream::after(tok.clone(), &prompt)), " the city");
    assert_eq!(run(TokenStream::new(tok.clone())), "the city");
    let bytes = Arc::new(Tokenizer::byte_level());
    let ids = bytes.encode(" x y").unwrap();
    let mut s = TokenStream::after(bytes.clone(), &bytes.encode("ab").unwrap());
    let out: String = ids.iter().filter_map(|&id| s.push(id).unwrap()).collect();
    assert_eq!(out, " x y");
}

fn error(file: &GgufFile) -> String {
    match Tokenizer::from_gguf(file) {
        Err(ModelError::Tokenizer(e)) => e,
        Err(e) => panic!("not a tokenizer error: {e}"),
        Ok(_) => panic!("loaded"),
    }
}

fn refused(edit: impl FnOnce(&mut BTreeMap<String, Value>), want: &str) {
    let mut file = open("spm.gguf");
    edit(&mut file.metadata);
    let e = error(&file);
    assert!(e.contains(want), "{e:?} does not say {want:?}");
}

fn tokens(m: &mut BTreeMap<String, Value>) -> &mut Vec<String> {
    match m.get_mut("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::Str(t))) => t,
        _ => unreachable!(),
    }
}

fn scores(m: &mut BTreeMap<String, Value>) -> &mut Vec<f64> {
    match m.get_mut("tokenizer.ggml.scores") {
        Some(Value::Array(Array::F64(s))) => s,
        _ => unreachable!(),
    }
}

#[test]
fn malformed_metadata_is_an_error_naming_the_key() {
    const SCORES: &str = "tokenizer.ggml.scores";
    const TYPES: &str = "tokenizer.ggml.token_type";
    refused(
        |m| {
            m.remove(SCORES);
        },
        "tokenizer.ggml.scores is missing",
    );
    refused(
        |m| {
            scores(m).pop();
        },
        "tokenizer.ggml.scores has 639 entries for 640 tokens",
    );
    refused(
        |m| {
            m.insert(SCORES.into(), Value::Array(Array::U64(vec![0; 640])));
        },
        "tokenizer.ggml.scores is not an array of floats",
    );
    refused(
        |m| {
            m.insert(SCORES.into(), Value::F64(0.0));
        },
        "tokenizer.ggml.scores is not an array of floats",
    );
    refused(
        |m| scores(m)[300] = f64::NAN,
        "tokenizer.ggml.scores[300] is NaN",
    );
    refused(
        |m| {
            m.insert(TYPES.into(), Value::Array(Array::U64(vec![1; 3])));
        },
        "tokenizer.ggml.token_type is not an array of 640 integers",
    );
    refused(
        |m| {
            m.insert(
                TYPES.into(),
                Value::Array(Array::Str(vec![String::new(); 640])),
            );
        },
        "tokenizer.ggml.token_type is not an array of 640 integers",
    );
    refused(
        |m| tokens(m)[600] = "▁the".into(),
        "tokenizer.ggml.tokens has \"▁the\" twice",
    );
    refused(
        |m| tokens(m)[5 + 0x41] = "A-byte".into(),
        "has 255 of the 256 byte tokens",
    );
    refused(
        |m| {
            m.insert(
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::U64(vec![1, 2])),
            );
        },
        "tokenizer.ggml.tokens is not an array of strings",
    );
    refused(
        |m| {
            m.remove("tokenizer.ggml.tokens");
        },
        "tokenizer.ggml.tokens is missing",
    );
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.eot_token_id",
    ] {
        refused(
            |m| {
                m.insert(key.into(), Value::U64(640));
            },
            &format!("{key} U64(640) is not a token id"),
        );
        refused(
            |m| {
                m.insert(key.into(), Value::Str("1".into()));
            },
            &format!("{key} Str(\"1\") is not a token id"),
        );
    }
    for key in [
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_space_prefix",
    ] {
        refused(
            |m| {
                m.insert(key.into(), Value::U64(1));
            },
            &format!("{key} U64(1) is not a boolean"),
        );
    }
    refused(
        |m| {
            m.insert(
                "tokenizer.ggml.remove_extra_whitespaces".into(),
                Value::Bool(true),
            );
        },
        "remove_extra_whitespaces is not supported",
    );
    refused(
        |m| {
            m.insert("tokenizer.ggml.model".into(), Value::Str("bert".into()));
        },
        "tokenizer model \"bert\" is not supported",
    );
    // An empty vocabulary: no unknown token to fall back to.
    refused(
        |m| {
            tokens(m).clear();
            scores(m).clear();
            m.remove(TYPES);
            m.remove("tokenizer.ggml.bos_token_id");
            m.remove("tokenizer.ggml.eos_token_id");
            m.remove("tokenizer.ggml.unknown_token_id");
            m.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
        },
        "tokenizer.ggml.unknown_token_id is missing",
    );
    refused(
        |m| {
            m.remove("tokenizer.ggml.bos_token_id");
            m.remove("tokenizer.ggml.eos_token_id");
            tokens(m).truncate(1);
            scores(m).truncate(1);
            m.insert(TYPES.into(), Value::Array(Array::U64(vec![2])));
        },
        "add_bos_token is true but tokenizer.ggml.bos_token_id is missing",
    );
}

/// A vocabulary without any byte token falls back to the unknown token, several unknown
/// characters in a row fused into one.
#[test]
fn without_byte_tokens_unknown_characters_are_unk() {
    let mut file = open("spm.gguf");
    let m = &mut file.metadata;
    for (i, t) in tokens(m).iter_mut().enumerate().skip(5).take(256) {
        *t = format!("unused{i}");
    }
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let ids = tok.encode("a 日本語 b").unwrap();
    assert_eq!(ids.iter().filter(|&&t| t == 0).count(), 1, "{ids:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any vocabulary over a small alphabet (all byte tokens present, scores drawn from a
    /// few values so that merges tie): loading works, and every text round-trips.
    #[test]
    fn random_vocabularies_round_trip(
        pieces in proptest::collection::vec("[ab▁é]{2,5}", 0..60),
        score_of in proptest::collection::vec(-4i32..4, 60),
        text in "[ab é\n]{0,40}",
        prefix in any::<bool>(),
    ) {
        let mut file = open("spm.gguf");
        let m = &mut file.metadata;
        let mut vocab: Vec<String> = tokens(m)[..261].to_vec();
        vocab.extend(["a", "b", "▁", "é"].map(String::from));
        for p in pieces {
            if !vocab.contains(&p) {
                vocab.push(p);
            }
        }
        let n = vocab.len();
        let s: Vec<f64> = (0..n).map(|i| f64::from(score_of[i % 60])).collect();
        let types: Vec<u64> = (0..n).map(|i| match i { 0 => 2, 1..=3 => 3, 4 => 4, 5..=260 => 6, _ => 1 }).collect();
        *tokens(m) = vocab;
        *scores(m) = s;
        m.insert("tokenizer.ggml.token_type".into(), Value::Array(Array::U64(types)));
        m.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(prefix));
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let ids = tok.encode(&text).unwrap();
        prop_assert!(ids.iter().all(|&t| (t as usize) < n));
        prop_assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

/// `v` cycled to length `n` when `fit`.
fn fit_to<T: Copy>(v: Vec<T>, n: usize, fit: bool, zero: T) -> Vec<T> {
    if !fit {
        return v;
    }
    (0..n)
        .map(|i| v.get(i % v.len().max(1)).copied().unwrap_or(zero))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary small vocabularies, scores (infinite ones too), token types and ids:
    /// loading gives a tokenizer or a typed error, and whatever loads encodes and decodes
    /// arbitrary text without panicking.
    #[test]
    fn arbitrary_metadata_loads_or_fails_cleanly(
        vocab in proptest::collection::vec("(|<s>|<0x4[01]>|[a▁<>]{1,3})", 0..24),
        score_list in proptest::collection::vec(prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), -3.0..3.0f64], 0..24),
        types in proptest::option::of(proptest::collection::vec(0u64..9, 0..24)),
        ids in proptest::collection::vec(proptest::option::of(0u64..30), 3),
        flags in proptest::collection::vec(proptest::option::of(any::<bool>()), 2),
        text in "[a▁< >s\u{e9}]{0,20}",
        fit in any::<bool>(),
    ) {
        // Often no duplicates and arrays of the vocabulary's length, so that cases load.
        let mut vocab = vocab;
        if fit {
            let mut seen = std::collections::HashSet::new();
            vocab.retain(|t| !t.starts_with("<0x") && seen.insert(t.clone()));
        }
        let n = vocab.len();
        let score_list = fit_to(score_list, n, fit, 0.0);
        let types = types.map(|t| fit_to(t, n, fit, 1));
        let mut file = open("spm.gguf");
        let m = &mut file.metadata;
        *tokens(m) = vocab;
        *scores(m) = score_list;
        match types {
            Some(t) => m.insert("tokenizer.ggml.token_type".into(), Value::Array(Array::U64(t))),
            None => m.remove("tokenizer.ggml.token_type"),
        };
        let keys = ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"];
        for (key, id) in keys.into_iter().zip(ids) {
            match id {
                Some(i) => m.insert(key.into(), Value::U64(if fit { i % (n as u64).max(1) } else { i })),
                None => m.remove(key),
            };
        }
        let keys = ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix"];
        for (key, flag) in keys.into_iter().zip(flags) {
            match flag {
                Some(b) => m.insert(key.into(), Value::Bool(b)),
                None => m.remove(key),
            };
        }
        match Tokenizer::from_gguf(&file) {
            Err(ModelError::Tokenizer(_)) => {}
            Err(e) => prop_assert!(false, "not a tokenizer error: {e}"),
            Ok(tok) => {
                let ids = tok.encode_prompt(&text).unwrap();
                let _ = tok.decode(&ids).unwrap();
                for id in ids {
                    let _ = tok.token_text(id);
                }
            }
        }
    }
}
