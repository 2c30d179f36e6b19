//! Byte-level BPE (GGUF `gpt2`) decodes of token prefixes that cut a multi-byte character,
//! against the Hugging Face `tokenizers` library (`fixtures/pretokenizers.json`, written by
//! `scripts/reference/pretokenizer_fixtures.py` with SmolLM2's vocabulary and merges under
//! the `llama-bpe` and `qwen2` pre-tokenizers): the same text, U+FFFD where a character is
//! cut. Needs the SmolLM2 model file, as `smollm2.rs` does.

mod common;

use common::model_path;
use pagedattn_model::gguf::{GgufFile, Value};
use pagedattn_model::Tokenizer;

#[test]
fn decodes_of_cut_characters_match_the_tokenizers_library() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/pretokenizers.json")).unwrap();
    let mut file = GgufFile::open(&model_path()).unwrap();
    let (mut checked, mut cut) = (0, 0);
    for (pre, cases) in fixture["cases"].as_object().unwrap() {
        file.metadata
            .insert("tokenizer.ggml.pre".into(), Value::Str(pre.clone()));
        let tok = Tokenizer::from_gguf(&file).unwrap();
        for case in cases.as_array().unwrap() {
            let Some(prefixes) = case.get("prefix_decodes") else {
                continue;
            };
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            for (k, want) in prefixes.as_array().unwrap().iter().enumerate() {
                let want = want.as_str().unwrap();
                let got = tok.decode(&ids[..k]).unwrap();
                assert_eq!(got, want, "{pre}: {:?}, {k} ids", case["text"]);
                cut += usize::from(got.contains('\u{fffd}'));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 164);
    assert!(cut > 0, "no prefix cuts a character");
}
