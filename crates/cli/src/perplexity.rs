//! `pagedattn perplexity`: the perplexity of a model on a text file, by the method of
//! llama.cpp's `llama-perplexity`, so the two numbers compare.
//!
//! The whole file is tokenized (no chat template; special tokens written in the text are
//! matched whole, which llama.cpp's tool does not do, so a text holding `<|im_end|>` and
//! the like would differ) and cut into non-overlapping windows of `--ctx` tokens; the last,
//! partial window is dropped. Each window runs as one causal prefill from position 0 over
//! the paged KV cache (f32 K/V, blocks of 16 tokens, the same blocks overwritten by every
//! window), with logits for every position. Only the second half is scored, so every
//! scored token has at least `ctx / 2` tokens of context: at positions `i` in
//! `[ctx/2, ctx - 1)`, the negative log-likelihood of token `i + 1` under the log-softmax
//! (in f64) of position `i`'s logits. Perplexity is `exp` of the mean over all scored
//! tokens of all windows.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use pagedattn_kernels::{Batch, DType, KvCache, KvLocation, LogitsFor};
use pagedattn_kv::BlockId;
use pagedattn_model::gguf::{GgufFile, Value};
use pagedattn_model::{LoadOptions, Model};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tokens per KV block.
const BLOCK_SIZE: usize = 16;

/// Arguments of `pagedattn perplexity`.
#[derive(Debug, Clone, Args)]
pub struct PerplexityArgs {
    /// A `.gguf` file, or a Hugging Face directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The text to score (UTF-8), e.g. /usr/share/common-licenses/GPL-3.
    #[arg(long)]
    pub file: PathBuf,
    /// Tokens per window, even and at least 4; the second half of each window is scored.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Weights: native (a GGUF file's quantized blocks; other matrices bf16), bf16 or f32.
    #[arg(long, default_value = "native")]
    pub weights: String,
    /// Threads for the forward pass (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `pagedattn perplexity`. Every error is one line naming its cause.
pub fn run(args: &PerplexityArgs) -> Result<()> {
    // A window of 2 scores nothing (its one second-half position is the last, which has no
    // next token), so the smallest useful window is 4.
    if args.ctx < 4 || !args.ctx.is_multiple_of(2) {
        bail!("--ctx must be an even number >= 4, not {}", args.ctx);
    }
    let dtype = crate::flags::parse_weights(&args.weights)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if threads == 0 {
        bail!("--threads must be >= 1");
    }
    let text = read_text(&args.file)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| run_in_pool(args, dtype, &text))
}

/// The file as UTF-8 text, or a one-line error naming the file and what is wrong with it.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The model, and the BOS token to put at the start of each window if its metadata asks
/// for one.
///
/// llama.cpp's tool adds BOS (the whole text's first token, and each window's first token
/// replaced by it) exactly when the model's `tokenizer.ggml.add_bos_token` is true; for a
/// GPT-2 BPE vocabulary, the only kind the tokenizer here reads, the key's default is
/// false. SmolLM2's GGUF says false. A Hugging Face directory gets no BOS: its
/// `tokenizer_config.json` is not read.
fn load(path: &Path, dtype: pagedattn_model::WeightDType) -> Result<(Model, Option<u32>)> {
    let cannot = |e: &dyn std::fmt::Display| anyhow!("cannot load model {}: {e}", path.display());
    let opts = LoadOptions { dtype };
    if path.is_dir() {
        return Ok((Model::load(path, opts).map_err(|e| cannot(&e))?, None));
    }
    let file = GgufFile::open(path).map_err(|e| cannot(&e))?;
    let add_bos = matches!(
        file.get("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    let bos = file
        .get("tokenizer.ggml.bos_token_id")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    if add_bos && bos.is_none() {
        return Err(cannot(&"add_bos_token is true but bos_token_id is missing"));
    }
    let model = Model::from_gguf(&file, opts).map_err(|e| cannot(&e))?;
    Ok((model, bos.filter(|_| add_bos)))
}

fn run_in_pool(
    args: &PerplexityArgs,
    dtype: pagedattn_model::WeightDType,
    text: &str,
) -> Result<()> {
    let (model, bos) = load(&args.model, dtype)?;
    let c = model.config();
    let ctx = args.ctx;
    if ctx > c.max_context {
        bail!(
            "--ctx {ctx} is beyond the model's context of {} tokens",
            c.max_context
        );
    }
    let tok = model.require_tokenizer().map_err(|e| anyhow!("{e}"))?;
    let mut tokens = tok.encode(text).map_err(|e| anyhow!("{e}"))?;
    if let Some(b) = bos {
        tokens.insert(0, b);
    }
    let windows = tokens.len() / ctx;
    if windows == 0 {
        let n = tokens.len();
        let fits = n & !1;
        let hint = if fits >= 4 {
            format!("--ctx {fits} would fit")
        } else {
            "give a longer text".to_string()
        };
        let plural = if n == 1 { "" } else { "s" };
        bail!(
            "{} has {n} token{plural}, fewer than one window of --ctx {ctx}; {hint}",
            args.file.display()
        );
    }

    let blocks = ctx.div_ceil(BLOCK_SIZE);
    let mut cache =
        KvCache::new(c.kv_shape(DType::F32), blocks, BLOCK_SIZE).map_err(|e| anyhow!("{e}"))?;
    // Block i holds positions 16i..16i+15; every window starts at position 0 and
    // overwrites the previous window's K/V.
    let table: Vec<BlockId> = (0..blocks as u32).map(BlockId).collect();

    let t0 = Instant::now();
    let mut nll = 0.0f64;
    let mut scored = 0usize;
    let mut input = vec![0u32; ctx];
    for w in 0..windows {
        let window = &tokens[w * ctx..(w + 1) * ctx];
        input.copy_from_slice(window);
        if let Some(b) = bos {
            input[0] = b;
        }
        let mut batch = Batch::paged(BLOCK_SIZE);
        batch
            .push(&input, 0, KvLocation::Paged(&table), LogitsFor::All)
            .map_err(|e| anyhow!("window {}: {e}", w + 1))?;
        let logits = model
            .forward(&batch, &mut cache)
            .map_err(|e| anyhow!("window {}: {e}", w + 1))?;
        let (sum, n) = score_window(&logits.data, logits.vocab, window);
        nll += sum;
        scored += n;
        eprintln!("[{}] {:.4}", w + 1, (nll / scored as f64).exp());
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{} tokens, {windows} windows of {ctx}, {scored} tokens scored, {secs:.1} s",
        tokens.len()
    )
    .and_then(|()| writeln!(stdout, "perplexity: {:.4}", perplexity(nll, scored)))
    .map_err(|e| anyhow!("stdout: {e}"))
}

/// Negative log-likelihood (natural log) of `target` under the softmax of `logits`,
/// computed in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln() - f64::from(logits[target as usize])
}

/// Scores one window: `logits` holds `[window.len(), vocab]` (every position's next-token
/// logits), and positions `i` in `[len/2, len - 1)` are scored against `window[i + 1]`.
/// Returns the summed negative log-likelihood and the number of tokens scored.
pub fn score_window(logits: &[f32], vocab: usize, window: &[u32]) -> (f64, usize) {
    let len = window.len();
    debug_assert_eq!(logits.len(), len * vocab);
    let first = len / 2;
    let range = first..len.saturating_sub(1);
    let n = range.len();
    let sum = range
        .map(|i| nll(&logits[i * vocab..(i + 1) * vocab], window[i + 1]))
        .sum();
    (sum, n)
}

/// `exp` of the mean negative log-likelihood.
pub fn perplexity(nll_sum: f64, scored: usize) -> f64 {
    (nll_sum / scored as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        for (vocab, ctx) in [(2usize, 4usize), (7, 10), (49152, 8)] {
            let logits = vec![0.25f32; ctx * vocab];
            let window: Vec<u32> = (0..ctx as u32).map(|i| i % vocab as u32).collect();
            let (sum, n) = score_window(&logits, vocab, &window);
            assert_eq!(n, ctx / 2 - 1);
            let ppl = perplexity(sum, n);
            assert!(
                (ppl - vocab as f64).abs() < 1e-9 * vocab as f64,
                "{ppl} vs {vocab}"
            );
        }
    }

    #[test]
    fn scores_only_the_second_half_against_the_next_token() {
        // vocab 3, ctx 6: positions 3 and 4 are scored, against tokens 4 and 5.
        let (vocab, ctx) = (3usize, 6usize);
        let window = [0u32, 1, 2, 0, 1, 2];
        let mut logits = vec![f32::NAN; ctx * vocab];
        // Position 3 predicts token 1 (= window[4]) with logits [0, ln 3, 0]: p = 3/5.
        logits[3 * vocab..4 * vocab].copy_from_slice(&[0.0, 3f32.ln(), 0.0]);
        // Position 4 predicts token 2 (= window[5]) with logits [1, 1, 1] + 100: p = 1/3.
        logits[4 * vocab..5 * vocab].copy_from_slice(&[101.0, 101.0, 101.0]);
        // Positions 0..3 and 5 stay NaN: reading any of them would poison the sum.
        let (sum, n) = score_window(&logits, vocab, &window);
        assert_eq!(n, 2);
        let want = -(3.0f64 / 5.0).ln() - (1.0f64 / 3.0).ln();
        assert!((sum - want).abs() < 1e-6, "{sum} vs {want}");
    }

    #[test]
    fn nll_is_stable_for_large_logits() {
        let l = [1000.0f32, 0.0, -1000.0];
        assert!(nll(&l, 0).abs() < 1e-12);
        assert!((nll(&l, 1) - 1000.0).abs() < 1e-9);
    }
}
