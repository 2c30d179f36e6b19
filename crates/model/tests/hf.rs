//! Hugging Face layout: a model written as config.json + model.safetensors loads back to
//! the same function, including the RoPE convention change from GGUF's adjacent pairs to
//! Hugging Face's half split.

mod common;

use common::{max_diff, prefill_all, temp_dir};
use pagedattn_model::{LoadOptions, Model, ModelConfig, ModelError, RopeStyle, WeightDType};

#[test]
fn random_model_round_trips_through_safetensors() {
    for style in [RopeStyle::HalfSplit, RopeStyle::AdjacentPairs] {
        let mut config = ModelConfig::named("tiny").unwrap();
        config.rope_style = style;
        config.tie_embeddings = style == RopeStyle::HalfSplit;
        let model = Model::random(config, 7, WeightDType::F32).unwrap();
        let dir = temp_dir(&format!("hf-{style:?}"));
        model.save_hf(&dir).unwrap();
        let back = Model::load(&dir, LoadOptions::default()).unwrap();
        assert_eq!(back.config().rope_style, RopeStyle::HalfSplit);
        assert_eq!(back.config().tie_embeddings, model.config().tie_embeddings);
        let toks: Vec<u32> = (0..19).map(|i| (i * 37 + 11) % 256).collect();
        let (a, b) = (prefill_all(&model, &toks, 4), prefill_all(&back, &toks, 4));
        assert!(
            max_diff(&a.data, &b.data) < 1e-5,
            "{style:?}: {}",
            max_diff(&a.data, &b.data)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn missing_and_bad_hf_files_are_errors() {
    let dir = temp_dir("hf-bad");
    assert!(matches!(
        Model::load(&dir, LoadOptions::default()),
        Err(ModelError::Io { .. })
    ));
    let model = Model::random_named("tiny", 1, WeightDType::F32).unwrap();
    model.save_hf(&dir).unwrap();
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        Model::load(&dir, LoadOptions::default()),
        Err(ModelError::Safetensors(_))
    ));
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 1}").unwrap();
    assert!(matches!(
        Model::load(&dir, LoadOptions::default()),
        Err(ModelError::InvalidConfig(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
