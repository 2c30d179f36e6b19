//! Each supported family against an independent numpy forward pass
//! (`scripts/reference/families.py`): small random models of `llama` (adjacent-pair RoPE in
//! GGUF, rotate-half in safetensors), `llama3` (RoPE frequency scaling: `rope_freqs.weight`
//! in GGUF, `rope_scaling` in config.json) and `qwen2` (Q/K/V biases, NeoX RoPE in both
//! formats, tied embeddings), each stored both ways. The logits must agree with the
//! reference at every position of a 64-token sequence, for the prompt processed whole, in
//! uneven chunks and one token at a time through a scrambled paged cache.

mod common;

use common::{chunked_logits, prefill_all, temp_dir};
use pagedattn_model::{
    Architecture, LoadOptions, Model, ModelError, RopeScaling, RopeStyle, WeightDType,
};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

const FAMILIES: [&str; 3] = ["llama", "llama3", "qwen2"];

fn dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(family)
}

/// The reference: tokens, logits `[64, vocab]` row by row, and the logits the model would
/// give without its family's feature.
struct Reference {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
    without: Vec<Vec<f32>>,
}

fn reference(family: &str) -> Reference {
    let bytes = std::fs::read(dir(family).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let rows = |name: &str| -> Vec<Vec<f32>> {
        let t = st.tensor(name).unwrap();
        let vocab = t.shape()[1];
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        v.chunks(vocab).map(<[f32]>::to_vec).collect()
    };
    let tokens = st
        .tensor("tokens")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| u32::try_from(i64::from_le_bytes(c.try_into().unwrap())).unwrap())
        .collect();
    Reference {
        tokens,
        logits: rows("logits"),
        without: rows("logits_without"),
    }
}

fn load(path: &Path, dtype: WeightDType) -> Model {
    Model::load(path, LoadOptions { dtype }).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest absolute difference over all rows, and the largest reference magnitude.
fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let mut diff = 0f32;
    let mut scale = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            diff = diff.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    (diff, scale)
}

/// f32 products of float16 weights against a float64 pass: the difference is f32
/// rounding through two layers, a few units in the sixth digit of the largest logit.
const TOLERANCE: f32 = 2e-5;

fn check_all_paths(model: &Model, r: &Reference, what: &str) {
    let whole = prefill_all(model, &r.tokens, 16);
    let whole: Vec<Vec<f32>> = (0..whole.len()).map(|i| whole.row(i).to_vec()).collect();
    let chunked = chunked_logits(model, &r.tokens, &[5, 11, 16, 3, 29], 16, 3);
    let decoded = chunked_logits(model, &r.tokens, &[8], 16, 5);
    assert_eq!(decoded.len(), 64);
    for (path, got) in [
        ("whole", &whole),
        ("chunked", &chunked),
        ("decoded", &decoded),
    ] {
        let (diff, scale) = compare(got, &r.logits);
        assert!(
            diff <= TOLERANCE * scale,
            "{what}, {path}: logits differ by {diff} (largest logit {scale})"
        );
    }
    // The family's feature must matter far beyond the tolerance, or the test proves
    // nothing about it.
    let (feature, scale) = compare(&r.without, &r.logits);
    assert!(
        feature > 1000.0 * TOLERANCE * scale,
        "{what}: the feature moves logits by only {feature}"
    );
}

#[test]
fn every_family_matches_the_reference_at_every_position_in_both_formats() {
    for family in FAMILIES {
        let r = reference(family);
        assert_eq!(r.tokens.len(), 64);
        let gguf = load(&dir(family).join("model.gguf"), WeightDType::F32);
        let hf = load(&dir(family).join("hf"), WeightDType::F32);
        check_all_paths(&gguf, &r, &format!("{family} GGUF"));
        check_all_paths(&hf, &r, &format!("{family} safetensors"));
    }
}

#[test]
fn each_format_is_read_as_its_family_lays_it_out() {
    let config = |family: &str, file: &str| {
        load(&dir(family).join(file), WeightDType::F32)
            .config()
            .clone()
    };
    let llama = config("llama", "model.gguf");
    assert_eq!(
        (llama.architecture, llama.rope_style, llama.tie_embeddings),
        (Architecture::Llama, RopeStyle::AdjacentPairs, false)
    );
    assert_eq!(config("llama", "hf").rope_style, RopeStyle::HalfSplit);
    let qwen = config("qwen2", "model.gguf");
    assert_eq!(
        (qwen.architecture, qwen.rope_style, qwen.tie_embeddings),
        (Architecture::Qwen2, RopeStyle::HalfSplit, true)
    );
    assert!(matches!(
        config("llama3", "model.gguf").rope_scaling,
        Some(RopeScaling::FreqFactors(f)) if f.len() == 8
    ));
    assert!(matches!(
        config("llama3", "hf").rope_scaling,
        Some(RopeScaling::Llama3 {
            original_max_position: 64,
            ..
        })
    ));
}

#[test]
fn bf16_and_native_weights_track_the_reference() {
    for family in FAMILIES {
        let r = reference(family);
        for dtype in [WeightDType::Bf16, WeightDType::Native] {
            let m = load(&dir(family).join("model.gguf"), dtype);
            let l = prefill_all(&m, &r.tokens, 16);
            let got: Vec<Vec<f32>> = (0..l.len()).map(|i| l.row(i).to_vec()).collect();
            let (diff, scale) = compare(&got, &r.logits);
            // bf16 keeps 8 bits of mantissa: a few percent of the largest logit.
            assert!(
                diff <= 0.05 * scale,
                "{family} {dtype:?}: logits differ by {diff} (largest {scale})"
            );
        }
    }
}

#[test]
fn a_qwen2_gguf_saved_as_safetensors_keeps_its_biases() {
    let r = reference("qwen2");
    let gguf = load(&dir("qwen2").join("model.gguf"), WeightDType::F32);
    let out = temp_dir("qwen2-save");
    gguf.save_hf(&out).unwrap();
    let back = load(&out, WeightDType::F32);
    assert_eq!(back.config().architecture, Architecture::Qwen2);
    check_all_paths(&back, &r, "qwen2 GGUF saved as safetensors");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn per_frequency_rope_factors_cannot_be_saved_as_config_json() {
    let gguf = load(&dir("llama3").join("model.gguf"), WeightDType::F32);
    let out = temp_dir("llama3-save");
    let err = gguf.save_hf(&out).unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig(_)));
    assert_eq!(
        err.to_string(),
        "invalid model config: per-frequency RoPE factors (rope_freqs.weight) have no config.json form"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_qwen2_file_without_its_biases_is_refused() {
    use pagedattn_model::gguf::GgufFile;
    let mut file = GgufFile::open(&dir("qwen2").join("model.gguf")).unwrap();
    file.tensors.retain(|t| t.name != "blk.1.attn_v.bias");
    let err = Model::from_gguf(&file, LoadOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "missing tensor blk.1.attn_v.bias");
}
