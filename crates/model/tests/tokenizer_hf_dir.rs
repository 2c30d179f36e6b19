//! A Hugging Face directory's tokenizer (`Tokenizer::from_hf_dir`): `tokenizer.json` plus
//! what `tokenizer_config.json`, `chat_template.jinja` and `generation_config.json` say
//! about BOS, EOS, end-of-turn ids and the chat template; the BOS that a `tokenizer.json`
//! post-processor (Llama 3's) puts first; and every malformed config as an error naming
//! the file and the key.

use pagedattn_model::{ModelError, Tokenizer};
use std::path::{Path, PathBuf};
use tokenizers::processors::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::AddedToken;

const BOS: u32 = 256;
const EOS: u32 = 257;
const BEGIN: u32 = 258;
const EOT: u32 = 259;
const EOM: u32 = 260;

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("pagedattn-hfdir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.0.join(file), text).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Byte-level tokens 0..256, then `<s>`, `</s>`, `<|begin_of_text|>`, `<|eot_id|>`,
/// `<|eom_id|>`, all special.
fn base() -> tokenizers::Tokenizer {
    let mut t = Tokenizer::byte_level().inner().clone();
    let special: Vec<AddedToken> = [
        "<s>",
        "</s>",
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|eom_id|>",
    ]
    .into_iter()
    .map(|s| AddedToken::from(s, true))
    .collect();
    t.add_special_tokens(&special);
    t
}

/// Llama 3's post-processor: a byte-level step, then `<|begin_of_text|> $A`.
fn llama3_post_processor(id: u32) -> PostProcessorWrapper {
    let template = TemplateProcessing::builder()
        .try_single("<|begin_of_text|> $A")
        .unwrap()
        .try_pair("<|begin_of_text|> $A <|begin_of_text|> $B")
        .unwrap()
        .special_tokens(vec![("<|begin_of_text|>", id)])
        .build()
        .unwrap();
    Sequence::new(vec![
        tokenizers::pre_tokenizers::byte_level::ByteLevel::default().into(),
        template.into(),
    ])
    .into()
}

fn dir_with(name: &str, tok: &tokenizers::Tokenizer) -> Dir {
    let d = Dir::new(name);
    tok.save(d.path().join("tokenizer.json"), false).unwrap();
    d
}

fn load(d: &Dir) -> Tokenizer {
    Tokenizer::from_hf_dir(d.path()).unwrap().unwrap()
}

#[test]
fn a_directory_without_tokenizer_json_has_no_tokenizer() {
    let d = Dir::new("none");
    d.write("tokenizer_config.json", "{}");
    assert!(Tokenizer::from_hf_dir(d.path()).unwrap().is_none());
}

#[test]
fn tokenizer_json_alone_keeps_the_eos_lookup() {
    let d = dir_with("alone", &base());
    let t = load(&d);
    assert_eq!((t.eos_id(), t.bos_id()), (Some(EOS), None));
    assert!(t.end_of_turn_ids().is_empty() && t.chat_template().is_none());
    assert_eq!(t.encode_prompt("hi").unwrap(), t.encode("hi").unwrap());
    // Empty config files say nothing either.
    d.write(
        "tokenizer_config.json",
        r#"{"bos_token": null, "add_bos_token": null}"#,
    )
    .write("generation_config.json", r#"{"eos_token_id": []}"#);
    let t = load(&d);
    assert_eq!((t.eos_id(), t.bos_id()), (Some(EOS), None));
}

#[test]
fn tokenizer_config_names_bos_eos_and_the_template() {
    let d = dir_with("config", &base());
    d.write(
        "tokenizer_config.json",
        r#"{"add_bos_token": true, "bos_token": "<s>",
            "eos_token": {"content": "<|eot_id|>", "lstrip": false, "special": true},
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"}"#,
    );
    let t = load(&d);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(BOS), Some(EOT)));
    assert!(t.chat_template().unwrap().starts_with("{{ bos_token }}"));
    let ids = t.encode("hi").unwrap();
    assert_eq!(t.encode_prompt("hi").unwrap(), [&[BOS][..], &ids].concat());
    // A template that writes the BOS gets no second one.
    assert_eq!(
        t.encode_prompt("<s>hi").unwrap(),
        [&[BOS][..], &ids].concat()
    );
    // `add_bos_token: false`: none added.
    d.write(
        "tokenizer_config.json",
        r#"{"add_bos_token": false, "bos_token": "<s>"}"#,
    );
    let t = load(&d);
    assert_eq!(t.bos_id(), Some(BOS));
    assert_eq!(t.encode_prompt("hi").unwrap(), ids);
}

#[test]
fn a_list_of_chat_templates_gives_the_default_one() {
    let d = dir_with("templates", &base());
    d.write(
        "tokenizer_config.json",
        r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
    );
    assert_eq!(load(&d).chat_template(), Some("D"));
    d.write(
        "tokenizer_config.json",
        r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#,
    );
    assert_eq!(load(&d).chat_template(), None);
    // chat_template.jinja replaces the config's, as transformers reads it.
    d.write("chat_template.jinja", "J{{ messages }}");
    assert_eq!(load(&d).chat_template(), Some("J{{ messages }}"));
}

/// Llama 3: `tokenizer.json` puts `<|begin_of_text|>` first (its post-processor, which
/// `encode` does not run), the config names `<|eot_id|>` as EOS, and
/// `generation_config.json` lists the three ids that end generation.
#[test]
fn llama3_style_directory() {
    let mut tok = base();
    tok.with_post_processor(Some(llama3_post_processor(BEGIN)));
    let d = dir_with("llama3", &tok);
    let t = load(&d);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(BEGIN), Some(EOS)));
    let ids = t.encode("hi").unwrap();
    let prompt = t.encode_prompt("hi").unwrap();
    assert_eq!(prompt, [&[BEGIN][..], &ids].concat());
    assert_eq!(t.encode_prompt("<|begin_of_text|>hi").unwrap(), prompt);

    d.write("tokenizer_config.json", r#"{"eos_token": "<|eot_id|>"}"#)
        .write(
            "generation_config.json",
            &format!(r#"{{"bos_token_id": {BEGIN}, "eos_token_id": [{EOS}, {EOM}, {EOT}]}}"#),
        );
    let t = load(&d);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(BEGIN), Some(EOT)));
    assert_eq!(t.end_of_turn_ids(), [EOS, EOM]);
    assert_eq!(t.encode_prompt("hi").unwrap()[0], BEGIN);

    // The config can turn the post-processor's BOS off.
    d.write("tokenizer_config.json", r#"{"add_bos_token": false}"#);
    let t = load(&d);
    assert_eq!(t.encode_prompt("hi").unwrap(), ids);
    // Without the tokenizer's EOS, the first listed id is EOS.
    assert_eq!(
        (t.eos_id(), t.end_of_turn_ids()),
        (Some(EOS), &[EOM, EOT][..])
    );
}

#[test]
fn generation_config_alone_names_eos_and_bos() {
    let d = dir_with("generation", &base());
    d.write(
        "generation_config.json",
        &format!(r#"{{"bos_token_id": {BOS}, "eos_token_id": {EOT}, "temperature": 0.6}}"#),
    );
    let t = load(&d);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(BOS), Some(EOT)));
    assert!(t.end_of_turn_ids().is_empty());
    // A BOS id alone does not make prompts start with it.
    assert_eq!(t.encode_prompt("hi").unwrap(), t.encode("hi").unwrap());
    d.write("tokenizer_config.json", r#"{"add_bos_token": true}"#);
    assert_eq!(load(&d).encode_prompt("hi").unwrap()[0], BOS);
}

fn refused(d: &Dir, want: &[&str]) {
    match Tokenizer::from_hf_dir(d.path()) {
        Err(ModelError::Tokenizer(e)) => {
            for w in want {
                assert!(e.contains(w), "{e:?} does not say {w:?}");
            }
        }
        Err(e) => panic!("not a tokenizer error: {e}"),
        Ok(_) => panic!("loaded; wanted {want:?}"),
    }
}

#[test]
fn malformed_tokenizer_config_is_an_error_naming_the_key() {
    const F: &str = "tokenizer_config.json";
    let d = dir_with("bad-config", &base());
    for (text, want) in [
        ("{\"bos_token\": \"<s>\"", "EOF while parsing"),
        ("[1, 2]", "not a JSON object"),
        ("", "EOF while parsing"),
        (
            r#"{"add_bos_token": "yes"}"#,
            "add_bos_token is not a boolean",
        ),
        (
            r#"{"bos_token": 5}"#,
            "bos_token is neither a string nor an object",
        ),
        (
            r#"{"eos_token": {"text": "</s>"}}"#,
            "eos_token is neither a string nor an object",
        ),
        (
            r#"{"bos_token": "<nope>"}"#,
            "bos_token \"<nope>\" is not a token of tokenizer.json",
        ),
        (
            r#"{"eos_token": {"content": "<|x|>"}}"#,
            "eos_token \"<|x|>\" is not a token",
        ),
        (
            r#"{"chat_template": 5}"#,
            "chat_template is neither a string nor a list",
        ),
        (
            r#"{"chat_template": [{"name": "default"}]}"#,
            "chat_template has an entry without",
        ),
        (
            r#"{"chat_template": ["x"]}"#,
            "chat_template has an entry without",
        ),
        (
            r#"{"add_bos_token": true}"#,
            "add_bos_token is true but no BOS token is named",
        ),
    ] {
        d.write(F, text);
        refused(&d, &[F, want]);
    }
}

#[test]
fn malformed_generation_config_is_an_error_naming_the_key() {
    const F: &str = "generation_config.json";
    let d = dir_with("bad-generation", &base());
    for (text, want) in [
        ("{", "EOF while parsing"),
        ("\"text\"", "not a JSON object"),
        (
            r#"{"eos_token_id": -1}"#,
            "eos_token_id -1 is not a token id (the vocabulary has 261)",
        ),
        (
            r#"{"eos_token_id": 1.5}"#,
            "eos_token_id 1.5 is not a token id",
        ),
        (
            r#"{"eos_token_id": "2"}"#,
            "eos_token_id \"2\" is not a token id",
        ),
        (
            r#"{"eos_token_id": [1, 261]}"#,
            "eos_token_id 261 is not a token id",
        ),
        (
            r#"{"eos_token_id": [[1]]}"#,
            "eos_token_id [1] is not a token id",
        ),
        (
            r#"{"eos_token_id": 4294967296}"#,
            "eos_token_id 4294967296 is not a token id",
        ),
        (
            r#"{"bos_token_id": [1, 2]}"#,
            "bos_token_id is a list, not one token id",
        ),
        (
            r#"{"bos_token_id": 9999}"#,
            "bos_token_id 9999 is not a token id",
        ),
    ] {
        d.write(F, text);
        refused(&d, &[F, want]);
    }
}

#[test]
fn oversized_unreadable_or_broken_files_are_errors() {
    let d = dir_with("big", &base());
    // One byte over 16 MiB of valid JSON (whitespace).
    let mut big = vec![b' '; 16 << 20];
    big.extend_from_slice(b"{}");
    std::fs::write(d.path().join("generation_config.json"), &big).unwrap();
    refused(&d, &["generation_config.json", "larger than 16 MiB"]);
    std::fs::remove_file(d.path().join("generation_config.json")).unwrap();
    // Exactly 16 MiB is fine.
    big.truncate((16 << 20) - 2);
    big.extend_from_slice(b"{}");
    std::fs::write(d.path().join("tokenizer_config.json"), &big).unwrap();
    assert!(Tokenizer::from_hf_dir(d.path()).unwrap().is_some());
    std::fs::remove_file(d.path().join("tokenizer_config.json")).unwrap();

    std::fs::create_dir(d.path().join("tokenizer_config.json")).unwrap();
    refused(&d, &["tokenizer_config.json"]);
    std::fs::remove_dir(d.path().join("tokenizer_config.json")).unwrap();

    std::fs::write(d.path().join("chat_template.jinja"), b"{{ \xff }}").unwrap();
    refused(&d, &["chat_template.jinja", "not UTF-8"]);
    std::fs::remove_file(d.path().join("chat_template.jinja")).unwrap();

    d.write("tokenizer.json", "{\"model\": ");
    refused(&d, &["tokenizer.json"]);
}

/// A post-processor whose BOS id is outside the vocabulary is refused.
#[test]
fn a_post_processor_bos_outside_the_vocabulary_is_an_error() {
    let mut tok = base();
    tok.with_post_processor(Some(llama3_post_processor(5000)));
    let d = dir_with("pp-outside", &tok);
    refused(
        &d,
        &[
            "tokenizer.json",
            "post_processor",
            "\"<|begin_of_text|>\" has id 5000, outside the vocabulary",
        ],
    );
}

/// A Llama 2 style directory: the SentencePiece tokenizer built from a GGUF file, saved as
/// `tokenizer.json` with Llama 2's `<s> $A` post-processor, loads to the same tokenizer,
/// BOS added by the post-processor, EOS found by name, a token's text with its space.
#[test]
fn a_llama2_style_tokenizer_json_matches_the_gguf_tokenizer() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers/spm.gguf");
    let file = pagedattn_model::gguf::GgufFile::open(&path).unwrap();
    let gguf = Tokenizer::from_gguf(&file).unwrap();
    let mut tok = gguf.inner().clone();
    let template = TemplateProcessing::builder()
        .try_single("<s> $A")
        .unwrap()
        .special_tokens(vec![("<s>", 1)])
        .build()
        .unwrap();
    tok.with_post_processor(Some(template));
    let d = dir_with("llama2", &tok);
    let t = load(&d);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
    for text in [
        "Hello world",
        "  two spaces, 日本語 🦀",
        "<s>[INST] hi [/INST]",
        "",
    ] {
        assert_eq!(
            t.encode_prompt(text).unwrap(),
            gguf.encode_prompt(text).unwrap(),
            "{text:?}"
        );
        let ids = t.encode(text).unwrap();
        assert_eq!(
            t.decode(&ids).unwrap(),
            gguf.decode(&ids).unwrap(),
            "{text:?}"
        );
    }
    let hello = t.encode("Hello").unwrap();
    assert_eq!(t.token_text(hello[0]).unwrap(), " Hello");
    assert_eq!(t.decode(&hello).unwrap(), "Hello");
}
