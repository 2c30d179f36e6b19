//! Hugging Face directories on hostile input: mutations of every `config.json` field,
//! arbitrary and truncated `config.json`, every truncation of `model.safetensors` through
//! its header (and a sample beyond), random header overwrites, and tensors of the right
//! name with the wrong shape or type are typed errors (or valid loads), never panics; and
//! no load allocates more than a small multiple of the directory's size.

mod common;

use common::temp_dir;
use pagedattn_model::{LoadOptions, Model, ModelError, WeightDType};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

// ---- the valid directory and loading a mutated copy ----

/// The valid directory's `config.json` and `model.safetensors`.
fn valid() -> &'static (Vec<u8>, Vec<u8>) {
    static VALID: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    VALID.get_or_init(|| {
        let dir = temp_dir("hf-hostile-valid");
        let model = Model::random_named("tiny", 0, WeightDType::F32).unwrap();
        model.save_hf(&dir).unwrap();
        let config = std::fs::read(dir.join("config.json")).unwrap();
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (config, weights)
    })
}

fn valid_config() -> Value {
    serde_json::from_slice(&valid().0).unwrap()
}

/// A scratch directory per test thread, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        Self(temp_dir(&format!("hf-hostile-{tag}")))
    }

    /// Writes the two files and loads the directory, checking what the load allocated.
    fn load(&self, config: &[u8], weights: &[u8]) -> Result<Model, ModelError> {
        write(&self.0, "config.json", config);
        write(&self.0, "model.safetensors", weights);
        let (peak, r) = counting::peak_during(|| Model::load_hf(&self.0, LoadOptions::default()));
        // The file is read whole (1x), each matrix is filled as f32 (at most 1x more,
        // F16 doubles it) and packed (1x more); leave room for small bookkeeping.
        let bound = 8 * (config.len() + weights.len()) + (1 << 20);
        assert!(
            peak <= bound,
            "a load allocated {peak} bytes, bound {bound}"
        );
        r
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// `8 + header length`: where the tensor data begins.
fn header_end(weights: &[u8]) -> usize {
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap());
    8 + usize::try_from(n).unwrap()
}

#[test]
fn the_valid_directory_loads() {
    let (config, weights) = valid();
    let s = Scratch::new("ok");
    let m = s.load(config, weights).unwrap();
    assert_eq!(m.config().vocab_size, 256);
    assert!(m.tokenizer().is_none());
}

// ---- config.json ----

const FIELDS: [&str; 10] = [
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
];

fn with_field(field: &str, v: Option<Value>) -> Vec<u8> {
    let mut c = valid_config();
    let obj = c.as_object_mut().unwrap();
    match v {
        Some(v) => obj.insert(field.into(), v),
        None => obj.remove(field),
    };
    serde_json::to_vec(&c).unwrap()
}

#[test]
fn every_numeric_field_mutation_is_an_error_or_a_valid_load() {
    let (_, weights) = valid();
    let s = Scratch::new("fields");
    let values = [
        Some(json!(0)),
        Some(json!(-1)),
        Some(json!(1.5)),
        Some(json!(1e30)),
        Some(json!(1e300)),
        Some(json!(1_000_000_000_000_u64)),
        Some(json!(1_u64 << 40)),
        Some(json!(u64::MAX)),
        Some(json!("NaN")),
        Some(json!("x")),
        Some(json!([1])),
        Some(json!({})),
        Some(Value::Null),
        None,
    ];
    let mut loaded = 0;
    for field in FIELDS {
        for v in &values {
            match s.load(&with_field(field, v.clone()), weights) {
                Ok(m) => {
                    loaded += 1;
                    // Only what the weights allow: the shapes are those of the file.
                    assert_eq!(m.config().hidden_size, 64, "{field} = {v:?}");
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        matches!(
                            e,
                            ModelError::InvalidConfig(_)
                                | ModelError::ShapeMismatch { .. }
                                | ModelError::MissingTensor(_)
                        ),
                        "{field} = {v:?}: {msg}"
                    );
                }
            }
        }
    }
    // Legal ones: the optional fields absent or null, other context lengths and RoPE
    // bases, positive epsilons.
    assert!(loaded > 0);
}

#[test]
fn config_errors_name_the_field_and_value() {
    let (_, weights) = valid();
    let s = Scratch::new("table");
    let cases: &[(&str, Option<Value>, &str)] = &[
        (
            "num_hidden_layers",
            Some(json!(1_000_000_000_000_u64)),
            "parameters",
        ),
        (
            "num_hidden_layers",
            Some(json!(0)),
            "num_layers must be > 0",
        ),
        (
            "num_hidden_layers",
            Some(json!(3)),
            "missing tensor model.layers.2",
        ),
        (
            "num_hidden_layers",
            Some(json!("NaN")),
            "num_hidden_layers: invalid type",
        ),
        ("hidden_size", Some(json!(0)), "hidden_size must be > 0"),
        (
            "hidden_size",
            Some(json!(1.5)),
            "hidden_size: invalid type: floating point",
        ),
        (
            "hidden_size",
            Some(json!(-1)),
            "hidden_size: invalid value: integer `-1`",
        ),
        (
            "hidden_size",
            Some(json!(1e30)),
            "hidden_size: invalid type",
        ),
        ("hidden_size", Some(json!(u64::MAX)), "overflows"),
        (
            "hidden_size",
            Some(Value::Null),
            "hidden_size: invalid type: null",
        ),
        ("hidden_size", None, "missing field `hidden_size`"),
        (
            "num_attention_heads",
            Some(json!(3)),
            "not a multiple of num_kv_heads",
        ),
        (
            "num_key_value_heads",
            Some(json!(3)),
            "not a multiple of num_kv_heads 3",
        ),
        ("head_dim", Some(json!(15)), "head_dim 15 must be even"),
        (
            "vocab_size",
            Some(json!(1_u64 << 40)),
            "vocab_size exceeds u32",
        ),
        ("vocab_size", Some(json!(1_u64 << 31)), "parameters"),
        (
            "vocab_size",
            Some(json!(255)),
            "model.embed_tokens.weight: expected shape [255, 64]",
        ),
        ("intermediate_size", Some(json!(1_u64 << 40)), "parameters"),
        (
            "max_position_embeddings",
            Some(json!(0)),
            "max_context must be > 0",
        ),
        (
            "max_position_embeddings",
            Some(json!("x")),
            "max_position_embeddings: invalid type: string",
        ),
        (
            "rope_theta",
            Some(json!(-1)),
            "rope_theta -1 must be finite and > 0",
        ),
        (
            "rope_theta",
            Some(json!(0)),
            "rope_theta 0 must be finite and > 0",
        ),
        (
            "rope_theta",
            Some(json!(1e300)),
            "rope_theta inf must be finite and > 0",
        ),
        (
            "rope_theta",
            Some(json!("NaN")),
            "rope_theta: invalid type: string",
        ),
        (
            "rms_norm_eps",
            Some(json!(0)),
            "rms_norm_eps 0 must be finite and > 0",
        ),
        (
            "rms_norm_eps",
            Some(json!(-1e-5)),
            "rms_norm_eps -0.00001 must be finite and > 0",
        ),
        (
            "rms_norm_eps",
            Some(json!(1e300)),
            "rms_norm_eps inf must be finite and > 0",
        ),
        (
            "tie_word_embeddings",
            Some(json!(false)),
            "missing tensor lm_head.weight",
        ),
        (
            "tie_word_embeddings",
            Some(json!(1)),
            "tie_word_embeddings: invalid type",
        ),
    ];
    for (field, v, want) in cases {
        let msg = s
            .load(&with_field(field, v.clone()), weights)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(want),
            "{field} = {v:?}: {msg:?} lacks {want:?}"
        );
    }
    // head_dim absent: hidden_size must divide among the heads.
    let mut c = valid_config();
    let obj = c.as_object_mut().unwrap();
    obj.remove("head_dim");
    obj.insert("hidden_size".into(), json!(66));
    let msg = s
        .load(&serde_json::to_vec(&c).unwrap(), weights)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("hidden_size 66 is not a multiple of num_attention_heads 4"),
        "{msg}"
    );
}

#[test]
fn config_truncated_at_every_offset_is_an_error() {
    let (config, weights) = valid();
    let s = Scratch::new("cfg-trunc");
    for n in 0..config.len() {
        let e = s.load(&config[..n], weights).unwrap_err();
        assert!(matches!(e, ModelError::InvalidConfig(_)), "at {n}: {e}");
    }
    for text in ["[]", "1", "null", "\"x\"", "{}", "\u{feff}{}"] {
        let e = s.load(text.as_bytes(), weights).unwrap_err();
        assert!(matches!(e, ModelError::InvalidConfig(_)), "{text}: {e}");
    }
    let e = s.load(&[0xff, 0xfe, b'{'], weights).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

// ---- model.safetensors ----

#[test]
fn weights_truncated_anywhere_are_an_error() {
    let (config, weights) = valid();
    let s = Scratch::new("st-trunc");
    let end = header_end(weights);
    // Every offset through the header, then ~200 spread over the data.
    let step = ((weights.len() - end) / 200).max(1);
    for n in (0..=end).chain((end + 1..weights.len()).step_by(step)) {
        let e = s.load(config, &weights[..n]).unwrap_err();
        assert!(
            matches!(e, ModelError::Safetensors(_) | ModelError::InvalidConfig(_)),
            "at {n}: {e}"
        );
    }
}

/// A tensor's type, shape and bytes.
type Replacement = (Dtype, Vec<usize>, Vec<u8>);

/// Rebuilds the valid file with tensor `name` replaced by `dtype`/`shape`/`data`, or
/// dropped when `data` is `None`.
fn replace_tensor(name: &str, new: Option<&Replacement>) -> Vec<u8> {
    let st = SafeTensors::deserialize(&valid().1).unwrap();
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for (n, v) in st.tensors() {
        if n != name {
            views.push((n, v));
        }
    }
    if let Some((dtype, shape, data)) = new {
        views.push((
            name.into(),
            TensorView::new(*dtype, shape.clone(), data).unwrap(),
        ));
    }
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn wrong_shape_type_or_missing_tensor_is_an_error_naming_it() {
    let (config, _) = valid();
    let s = Scratch::new("tensors");
    let q = "model.layers.1.self_attn.q_proj.weight";
    let norm = "model.norm.weight";
    let cases: Vec<(&str, Option<Replacement>, &str)> = vec![
        (
            q,
            Some((Dtype::F32, vec![64, 63], vec![0; 64 * 63 * 4])),
            "expected shape [64, 64], found [64, 63]",
        ),
        (
            q,
            Some((Dtype::F32, vec![64 * 64], vec![0; 64 * 64 * 4])),
            "found [4096]",
        ),
        (
            q,
            Some((Dtype::F32, vec![64, 64, 1], vec![0; 64 * 64 * 4])),
            "found [64, 64, 1]",
        ),
        (
            q,
            Some((Dtype::F64, vec![64, 64], vec![0; 64 * 64 * 8])),
            "unsupported tensor type F64",
        ),
        (
            q,
            Some((Dtype::U8, vec![64, 64], vec![0; 64 * 64])),
            "unsupported tensor type U8",
        ),
        (
            q,
            Some((Dtype::I32, vec![64, 64], vec![0; 64 * 64 * 4])),
            "unsupported tensor type I32",
        ),
        (
            norm,
            Some((Dtype::BOOL, vec![64], vec![0; 64])),
            "unsupported tensor type BOOL",
        ),
        (norm, Some((Dtype::F32, vec![], vec![0; 4])), "found []"),
        (norm, Some((Dtype::F32, vec![0], vec![])), "found [0]"),
        (q, None, "missing tensor"),
        (norm, None, "missing tensor"),
    ];
    for (name, new, want) in cases {
        let weights = replace_tensor(name, new.as_ref());
        let msg = s.load(config, &weights).unwrap_err().to_string();
        assert!(
            msg.contains(name) && msg.contains(want),
            "{name}: {msg:?} lacks {want:?}"
        );
    }
    // F16 and BF16 of the right shape are legal.
    for dtype in [Dtype::F16, Dtype::BF16] {
        let weights = replace_tensor(q, Some(&(dtype, vec![64, 64], vec![0; 64 * 64 * 2])));
        s.load(config, &weights).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn header_overwrites_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (config, weights) = valid();
        let mut w = weights.clone();
        let end = header_end(&w);
        for (i, b) in edits {
            w[i.index(end)] = b;
        }
        let s = Scratch::new("st-edit");
        match s.load(config, &w) {
            // An edit the format tolerates (a name's or a value's byte) loads the same model.
            Ok(m) => prop_assert_eq!(m.config().hidden_size, 64),
            Err(e) => prop_assert!(
                matches!(e, ModelError::Safetensors(_) | ModelError::MissingTensor(_)),
                "{:?}",
                e
            ),
        }
    }

    #[test]
    fn arbitrary_config_bytes_are_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let s = Scratch::new("cfg-bytes");
        let e = s.load(&bytes, &valid().1).unwrap_err();
        prop_assert!(matches!(e, ModelError::InvalidConfig(_)), "{}", e);
    }
}

// ---- sharded weights: model.safetensors.index.json ----

/// The valid weights split into two shards (alternate tensors) and their index.
fn shards() -> (Vec<u8>, Vec<u8>, Value) {
    let st = SafeTensors::deserialize(&valid().1).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut map = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        let v = st.tensor(n).unwrap();
        let file = if i % 2 == 0 {
            a.push((n.clone(), v));
            "model-00001-of-00002.safetensors"
        } else {
            b.push((n.clone(), v));
            "model-00002-of-00002.safetensors"
        };
        map.insert(n.clone(), file.into());
    }
    (
        safetensors::serialize(a, None).unwrap(),
        safetensors::serialize(b, None).unwrap(),
        json!({"metadata": {"total_size": 0}, "weight_map": map}),
    )
}

fn write_sharded(dir: &Path, index: &[u8]) {
    let (a, b, _) = shards();
    let _ = std::fs::remove_file(dir.join("model.safetensors"));
    write(dir, "config.json", &valid().0);
    write(dir, "model-00001-of-00002.safetensors", &a);
    write(dir, "model-00002-of-00002.safetensors", &b);
    write(dir, "model.safetensors.index.json", index);
}

#[test]
fn sharded_weights_load_as_the_single_file_does() {
    let s = Scratch::new("sharded");
    let (_, _, index) = shards();
    write_sharded(&s.0, index.to_string().as_bytes());
    let model = Model::load_hf(&s.0, LoadOptions::default()).unwrap();
    // Saved again, the sharded model is the single file it was cut from, byte for byte.
    let out = temp_dir("hf-hostile-sharded-out");
    model.save_hf(&out).unwrap();
    let again = std::fs::read(out.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    assert!(
        again == valid().1,
        "the sharded load differs from the single file"
    );
}

#[test]
fn bad_indexes_and_shards_are_errors_naming_them() {
    let s = Scratch::new("bad-index");
    let (_, _, index) = shards();
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"weight_map\": ".to_vec(),
            "model.safetensors.index.json: EOF",
        ),
        (b"[]".to_vec(), "no weight_map object"),
        (br#"{"weight_map": {}}"#.to_vec(), "weight_map is empty"),
        (
            br#"{"weight_map": {"model.norm.weight": 5}}"#.to_vec(),
            "weight_map[\"model.norm.weight\"] is not a file name",
        ),
        (
            br#"{"weight_map": {"model.norm.weight": "../model.safetensors"}}"#.to_vec(),
            "= \"../model.safetensors\" is not a .safetensors file in the directory",
        ),
        (
            br#"{"weight_map": {"model.norm.weight": "/etc/passwd"}}"#.to_vec(),
            "is not a .safetensors file in the directory",
        ),
        (
            br#"{"weight_map": {"model.norm.weight": "model-00009-of-00009.safetensors"}}"#
                .to_vec(),
            "model-00009-of-00009.safetensors",
        ),
    ];
    // An index that leaves out the second shard: its tensors are missing.
    let mut partial = index.clone();
    let map = partial["weight_map"].as_object_mut().unwrap();
    map.retain(|_, f| f == "model-00001-of-00002.safetensors");
    cases.push((partial.to_string().into_bytes(), "missing tensor"));
    for (bytes, says) in cases {
        write_sharded(&s.0, &bytes);
        let err = Model::load_hf(&s.0, LoadOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{}: loaded", String::from_utf8_lossy(&bytes)))
            .to_string();
        assert!(
            err.contains(says),
            "{}: {err}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(!err.contains('\n'), "{err}");
    }
    // Cut anywhere, the index is an error (or, cut to nothing but whitespace, one too).
    let text = index.to_string().into_bytes();
    for cut in (0..text.len()).step_by(7) {
        write_sharded(&s.0, &text[..cut]);
        assert!(
            Model::load_hf(&s.0, LoadOptions::default()).is_err(),
            "cut at {cut}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_index_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let s = Scratch::new("index-bytes");
        write_sharded(&s.0, &bytes);
        prop_assert!(Model::load_hf(&s.0, LoadOptions::default()).is_err());
    }
}
