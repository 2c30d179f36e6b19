//! Chat messages to a prompt, through the model's own chat template (the Jinja source in
//! the GGUF's `tokenizer.chat_template`) rendered with minijinja, as Hugging Face's
//! `apply_chat_template` does: `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, `raise_exception`, and Python string methods (`strip`, `startswith`, ...).
//! A model without a template gets ChatML.

use crate::error::ApiError;
use crate::openai::ChatMessage;
use minijinja::{Environment, ErrorKind};
use serde_json::Value;

/// ChatML, for models whose file carries no template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source` (ChatML if `None`); `bos` and `eos` are the texts of the model's
    /// special tokens.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        // One template per server process: the environment borrows it for its life.
        let source: &'static str = Box::leak(source.unwrap_or(CHATML).to_string().into_boxed_str());
        env.add_template("chat", source)
            .map_err(|e| format!("the model's chat template does not compile: {e}"))?;
        Ok(Self {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The prompt for `messages`, ending where the assistant's reply begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        let msgs = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let content = content_text(m.content.as_ref()).map_err(|e| {
                    ApiError::bad_request(e, Some(&format!("messages[{i}].content")))
                })?;
                Ok(serde_json::json!({ "role": m.role, "content": content }))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| ApiError::bad_request(e.to_string(), None))?;
        t.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(&msgs)),
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| {
            let msg = match e.kind() {
                ErrorKind::InvalidOperation => {
                    e.detail().unwrap_or("invalid conversation").to_string()
                }
                _ => format!("the chat template failed: {e}"),
            };
            ApiError::bad_request(msg, Some("messages"))
        })
    }
}

/// A message's text: a string, or text parts joined with newlines.
fn content_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            parts
                .iter()
                .map(|p| {
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => Ok(t.to_string()),
                        (Some(other), _) => Err(format!(
                            "content parts of type {other:?} are not supported (only text)"
                        )),
                        _ => Err("a content part must be {\"type\": \"text\", \"text\": ...}"
                            .to_string()),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join("\n"))
        }
        Some(_) => Err("content must be a string or a list of text parts".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Some(Value::String(content.into())),
        }
    }

    #[test]
    fn chatml_when_the_model_has_no_template() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let p = t.render(&[msg("user", "Hi")]).unwrap();
        assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn a_template_can_refuse_a_conversation_and_use_python_methods() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system here') }}{% endif %}{{ m.content.strip() }}|{% endfor %}";
        let t = ChatTemplate::new(Some(src), "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[msg("user", "  a  ")]).unwrap(), "a|");
        let e = t.render(&[msg("system", "x")]).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("no system here"), "{}", e.message);
    }

    #[test]
    fn content_parts_are_joined_and_other_kinds_refused() {
        let t = ChatTemplate::new(Some("{{ messages[0].content }}"), "", "").unwrap();
        let parts = ChatMessage {
            role: "user".into(),
            content: Some(
                serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
            ),
        };
        assert_eq!(t.render(&[parts]).unwrap(), "a\nb");
        let image = ChatMessage {
            role: "user".into(),
            content: Some(serde_json::json!([{"type": "image_url", "image_url": {}}])),
        };
        assert!(t.render(&[image]).is_err());
        assert!(ChatTemplate::new(Some("{% for %}"), "", "").is_err());
    }
}
