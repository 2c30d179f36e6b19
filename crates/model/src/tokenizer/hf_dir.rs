//! A Hugging Face directory's tokenizer files: `tokenizer.json` with
//! `tokenizer_config.json`, `chat_template.jinja` and `generation_config.json`, read and
//! written.

use super::{default_system_prompt, tok_err, Tokenizer};
use crate::error::{ModelError, Result};
use std::io::Read;
use std::path::Path;

/// The most bytes read from `tokenizer_config.json`, `generation_config.json` or
/// `chat_template.jinja`.
const CONFIG_CAP: u64 = 16 << 20;

impl Tokenizer {
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
