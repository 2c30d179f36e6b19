//! Validation shared by every entry point: everything about a call that does not depend on
//! where K/V live. Layout-specific checks (block tables, runs) are next to their kernels.

use crate::attention::spec::{AttentionConfig, SeqSpec};
use crate::cpu::Cpu;
use crate::error::{KernelError, Result};

/// What validation established about a call.
pub(crate) struct Call {
    pub cpu: Cpu,
    pub num_kv_heads: usize,
    pub tile_size: usize,
}

/// Checks everything that does not depend on where K/V live.
pub(crate) fn check_call<K>(
    cfg: &AttentionConfig,
    num_kv_heads: usize,
    head_dim: usize,
    tile_size: usize,
    q: &[f32],
    out: &[f32],
    seqs: &[SeqSpec<K>],
) -> Result<Call> {
    if cfg.num_heads == 0 || num_kv_heads == 0 || !cfg.num_heads.is_multiple_of(num_kv_heads) {
        return Err(KernelError::HeadMismatch {
            num_heads: cfg.num_heads,
            num_kv_heads,
        });
    }
    if cfg.head_dim != head_dim {
        return Err(KernelError::HeadDimMismatch {
            store: head_dim,
            call: cfg.head_dim,
        });
    }
    if tile_size == 0 {
        return Err(KernelError::InvalidShape("tile_size must be > 0".into()));
    }
    if !cfg.scale.is_finite() {
        return Err(KernelError::InvalidShape("scale must be finite".into()));
    }
    let row = cfg.num_heads * head_dim;
    if !q.len().is_multiple_of(row) {
        return Err(KernelError::InvalidShape(format!(
            "q has {} elements, not a multiple of num_heads * head_dim = {row}",
            q.len()
        )));
    }
    if out.len() != q.len() {
        return Err(KernelError::LengthMismatch {
            what: "out",
            expected: q.len(),
            actual: out.len(),
        });
    }
    let tokens = q.len() / row;
    let mut ranges = Vec::with_capacity(seqs.len());
    for (i, s) in seqs.iter().enumerate() {
        let bad = |reason: String| Err(KernelError::InvalidSequence { seq: i, reason });
        if s.query_len == 0 {
            return bad("query_len must be >= 1".into());
        }
        if s.context_len < s.query_len {
            return bad(format!(
                "context_len {} < query_len {}",
                s.context_len, s.query_len
            ));
        }
        if s.context_len >= 1 << 24 {
            return bad("context_len must be below 2^24 (positions are compared as f32)".into());
        }
        match s.query_start.checked_add(s.query_len) {
            Some(end) if end <= tokens => ranges.push((s.query_start, end, i)),
            _ => return bad(format!("query tokens run past the {tokens} tokens of q")),
        }
    }
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(KernelError::InvalidSequence {
            seq: w[1].2,
            reason: "query tokens overlap another sequence's".into(),
        });
    }
    Ok(Call {
        cpu: cfg.cpu,
        num_kv_heads,
        tile_size,
    })
}
