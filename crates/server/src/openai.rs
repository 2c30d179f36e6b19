//! The OpenAI API's wire shapes this server reads and writes: one type per shape.
//!
//! Requests ignore fields they do not know (as OpenAI's and vLLM's servers do), but a
//! known field of the wrong type is an error naming the field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `prompt` of a completion request: a string, token ids, or a list of either.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text prompt.
    Text(String),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several text prompts.
    Texts(Vec<String>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// `stop`: one string or several.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the request's usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and stopping fields the two endpoints share.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CommonParams {
    /// The model to use; must be the served model's name.
    pub model: Option<String>,
    /// Output tokens at most.
    pub max_tokens: Option<u64>,
    /// Output tokens at most (the chat endpoint's newer name).
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature (0: greedy).
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (-1 or 0: all).
    pub top_k: Option<i64>,
    /// Seed of the request's random stream.
    pub seed: Option<i64>,
    /// Completions per prompt.
    pub n: Option<u64>,
    /// Strings that end a completion (not included in it).
    pub stop: Option<Stop>,
    /// Token ids that end a completion.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Keep generating past end-of-sequence.
    pub ignore_eos: Option<bool>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Unknown to this server but common; accepted and ignored when neutral.
    pub presence_penalty: Option<f64>,
    /// As above.
    pub frequency_penalty: Option<f64>,
    /// As above.
    pub user: Option<String>,
}

/// `POST /v1/completions`: its own fields (the shared ones are [`CommonParams`], read from
/// the same body).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Option<Prompt>,
    /// Log-probabilities of this many most likely tokens per position (0-20).
    pub logprobs: Option<u64>,
    /// Echo the prompt before the completion (not supported: must be false).
    pub echo: Option<bool>,
}

/// One chat message; `content` is a string or a list of `{"type": "text", "text": ...}`
/// parts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ChatMessage {
    /// system, user, assistant or tool.
    pub role: String,
    /// The text (parts are joined).
    #[serde(default)]
    pub content: Option<Value>,
}

/// `POST /v1/chat/completions`: its own fields (the shared ones are [`CommonParams`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Option<Vec<ChatMessage>>,
    /// Return log-probabilities.
    pub logprobs: Option<bool>,
    /// How many alternatives per token (0-20), with `logprobs`.
    pub top_logprobs: Option<u64>,
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// `usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
    /// Cached prompt tokens.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// Log-probabilities of a completion choice (the legacy completions shape).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f32>,
    /// The most likely alternatives at each position, text -> log-probability.
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    /// Byte offset of each token's text in the choice's text.
    pub text_offset: Vec<usize>,
}

/// One alternative of a chat token's log-probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// Its text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// One chat token's log-probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    /// Its text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely alternatives.
    pub top_logprobs: Vec<TopLogprob>,
}

/// Log-probabilities of a chat choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// Per token of the content.
    pub content: Vec<ChatTokenLogprob>,
}

/// A choice of a completion response or chunk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionChoice {
    /// Its index (prompt index x n + sample index).
    pub index: usize,
    /// The text (in a chunk: the new text).
    pub text: String,
    /// Log-probabilities, if asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`; null in chunks before the last.
    pub finish_reason: Option<&'static str>,
}

/// `text_completion` response, and `text_completion` chunk when streaming.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionResponse {
    /// `cmpl-...`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Usage (in a stream: only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A chat message in a response, or its delta in a chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatDelta {
    /// `assistant` (in a chunk: only in the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The text (in a chunk: the new text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A choice of a chat response (`message`) or chunk (`delta`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatChoice {
    /// Its index.
    pub index: usize,
    /// The message (responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatDelta>,
    /// The delta (chunks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChatDelta>,
    /// Log-probabilities, if asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`; null in chunks before the last.
    pub finish_reason: Option<&'static str>,
}

/// `chat.completion` response or `chat.completion.chunk`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatResponse {
    /// `chatcmpl-...`.
    pub id: String,
    /// `chat.completion` or `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Usage (in a stream: only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelCard {
    /// The served name.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// `pagedattn`.
    pub owned_by: &'static str,
    /// Longest prompt + completion.
    pub max_model_len: usize,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The one served model.
    pub data: Vec<ModelCard>,
}
