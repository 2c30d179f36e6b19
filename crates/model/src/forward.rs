//! The forward pass over a flattened batch.
//!
//! All sequences' new tokens are stacked into one `[tokens, hidden]` activation, so every
//! matrix product runs once per layer for the whole batch; only attention looks at sequence
//! boundaries, through the KV backend. Per layer: RMSNorm, fused QKV product, RoPE at each
//! token's own position, K/V written to the cache, attention (prefill and decode mixed),
//! output projection added to the residual, RMSNorm, fused gate/up product, SwiGLU, down
//! projection added to the residual. The final norm and LM head run only on the rows that
//! need logits.

use crate::error::{ModelError, Result};
use crate::linear::matmul;
use crate::model::Model;
use crate::ops::{rms_norm, swiglu};
use pagedattn_kernels::{AttentionConfig, Batch, KvStore, LogitsFor};
use rayon::prelude::*;

/// Which sequence and position a row of [`Logits`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitsRow {
    /// Index of the sequence in the batch.
    pub seq: usize,
    /// Absolute position of the token whose next-token logits these are.
    pub position: usize,
}

/// Logits `[rows, vocab]` for the rows a batch asked for, in batch order.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// Vocabulary size (row width).
    pub vocab: usize,
    /// Row-major values.
    pub data: Vec<f32>,
    /// What each row is.
    pub rows: Vec<LogitsRow>,
}

impl Logits {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The last row belonging to sequence `seq`, if it asked for logits.
    pub fn last_for_seq(&self, seq: usize) -> Option<&[f32]> {
        self.rows
            .iter()
            .rposition(|r| r.seq == seq)
            .map(|i| self.row(i))
    }
}

/// Scratch buffers for one forward pass.
struct Activations {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

impl Model {
    /// Runs one step for every sequence of `batch`: writes their new tokens' K/V into `kv`
    /// and returns logits for the rows they asked for. The batch itself (token ids, slot
    /// counts, positions) is checked before any K/V is written; slots and block tables are
    /// checked by the KV store, and an error there may leave this step's K/V partly written
    /// into the batch's own slots, which hold nothing yet and are rewritten on retry.
    ///
    /// The pass runs on a thread of the rayon pool (the caller waits): its matrix products
    /// and attention then split work from inside the pool, where a task the other thread
    /// has not picked up yet is run by this one, instead of being injected from outside
    /// and waited for. Cold injection cost 1-2 ms per step at SmolLM2's size (12% of a
    /// four-sequence step).
    pub fn forward(&self, batch: &Batch<'_>, kv: &mut (impl KvStore + Send)) -> Result<Logits> {
        rayon::scope(|_| self.forward_in_pool(batch, kv))
    }

    fn forward_in_pool(&self, batch: &Batch<'_>, kv: &mut impl KvStore) -> Result<Logits> {
        let c = &self.config;
        let (h, qd, kvd, d, f) = (
            c.hidden_size,
            c.q_dim(),
            c.kv_dim(),
            c.head_dim,
            c.intermediate_size,
        );
        let (rows, picked) = self.logits_rows(batch)?;
        let (tokens, positions) = (batch.tokens(), batch.positions());
        let n = tokens.len();
        if n == 0 {
            return Ok(Logits {
                vocab: c.vocab_size,
                data: Vec::new(),
                rows,
            });
        }

        let mut a = Activations {
            x: vec![0.0; n * h],
            h: vec![0.0; n * h],
            qkv: vec![0.0; n * (qd + 2 * kvd)],
            q: vec![0.0; n * qd],
            k: vec![0.0; n * kvd],
            v: vec![0.0; n * kvd],
            attn: vec![0.0; n * qd],
            gate_up: vec![0.0; n * 2 * f],
            act: vec![0.0; n * f],
        };
        for (row, &t) in a.x.chunks_exact_mut(h).zip(tokens) {
            self.weights.embed.row_into(t as usize, row);
        }
        let mut rope = vec![0.0; n * d];
        rope.par_chunks_mut(d)
            .zip(positions)
            .for_each(|(t, &p)| self.rope.table(p, t));
        let attn_cfg = AttentionConfig::new(c.num_heads, d).with_cpu(self.cpu);

        for (layer, w) in self.weights.layers.iter().enumerate() {
            rms_norm(&a.x, &w.attn_norm, c.rms_norm_eps, &mut a.h);
            matmul(self.cpu, &a.h, &w.wqkv, &mut a.qkv, false)?;
            if let Some(bias) = &w.qkv_bias {
                a.qkv
                    .par_chunks_mut(qd + 2 * kvd)
                    .with_min_len(crate::ops::ROWS_PER_TASK)
                    .for_each(|row| row.iter_mut().zip(bias).for_each(|(x, b)| *x += b));
            }
            a.q.par_chunks_mut(qd)
                .zip(a.k.par_chunks_mut(kvd))
                .zip(a.v.par_chunks_mut(kvd))
                .zip(a.qkv.par_chunks(qd + 2 * kvd))
                .zip(rope.par_chunks(d))
                .with_min_len(crate::ops::ROWS_PER_TASK)
                .for_each(|((((q, k), v), qkv), table)| {
                    q.copy_from_slice(&qkv[..qd]);
                    k.copy_from_slice(&qkv[qd..qd + kvd]);
                    v.copy_from_slice(&qkv[qd + kvd..]);
                    self.rope.apply(q, table);
                    self.rope.apply(k, table);
                });
            kv.write_kv(layer, batch.slots(), &a.k, &a.v)?;
            kv.attend(&attn_cfg, layer, &a.q, batch.seqs(), &mut a.attn)?;
            matmul(self.cpu, &a.attn, &w.wo, &mut a.x, true)?;
            rms_norm(&a.x, &w.ffn_norm, c.rms_norm_eps, &mut a.h);
            matmul(self.cpu, &a.h, &w.w_gate_up, &mut a.gate_up, false)?;
            swiglu(self.cpu, &a.gate_up, f, &mut a.act)?;
            matmul(self.cpu, &a.act, &w.w_down, &mut a.x, true)?;
        }

        // Final norm and LM head only for the rows that need logits.
        let mut sel = vec![0.0; picked.len() * h];
        for (dst, &i) in sel.chunks_exact_mut(h).zip(&picked) {
            dst.copy_from_slice(&a.x[i * h..(i + 1) * h]);
        }
        let mut normed = vec![0.0; sel.len()];
        rms_norm(&sel, &self.weights.final_norm, c.rms_norm_eps, &mut normed);
        let mut data = vec![0.0; picked.len() * c.vocab_size];
        matmul(self.cpu, &normed, self.weights.head(), &mut data, false)?;
        Ok(Logits {
            vocab: c.vocab_size,
            data,
            rows,
        })
    }

    /// Checks what the model itself limits (token ids in the vocabulary, positions within
    /// its context; the batch's own invariants hold by construction) and lists the logits
    /// rows: what each is, and the token row it comes from.
    fn logits_rows(&self, batch: &Batch<'_>) -> Result<(Vec<LogitsRow>, Vec<usize>)> {
        let c = &self.config;
        let bad = |i: usize, m: String| Err(ModelError::InvalidBatch(format!("sequence {i}: {m}")));
        let (mut rows, mut picked) = (Vec::new(), Vec::new());
        for (i, (s, &logits)) in batch.seqs().iter().zip(batch.logits()).enumerate() {
            let (first, len) = (s.query_start, s.query_len);
            let tokens = &batch.tokens()[first..first + len];
            if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return bad(
                    i,
                    format!("token id {t} is outside the vocabulary ({})", c.vocab_size),
                );
            }
            if s.context_len > c.max_context {
                return bad(
                    i,
                    format!(
                        "positions up to {} exceed the model's context of {}",
                        s.context_len, c.max_context
                    ),
                );
            }
            let wanted = match logits {
                LogitsFor::None => 0,
                LogitsFor::Last => 1,
                LogitsFor::All => len,
            };
            let start_pos = s.context_len - len;
            for j in len - wanted..len {
                rows.push(LogitsRow {
                    seq: i,
                    position: start_pos + j,
                });
                picked.push(first + j);
            }
        }
        Ok((rows, picked))
    }
}
