//! The specification: naive attention in f64, one query row at a time, straight from the
//! definition `softmax(scale * q K^T) V` with the causal limit. Every kernel is tested
//! against it.

use crate::attention::spec::SeqSpec;
use crate::error::{KernelError, Result};

/// One sequence for [`reference_attention`]: its query rows in `q`, and its whole context
/// as plain arrays (values as stored, i.e. already rounded when the store is f16/bf16).
pub type RefSeq<'a> = SeqSpec<RefKv<'a>>;

/// A reference sequence's K/V: `[context_len, num_kv_heads, head_dim]` each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefKv<'a> {
    /// Keys.
    pub k: &'a [f32],
    /// Values, same shape as `k`.
    pub v: &'a [f32],
}

/// Shape of a reference call.
#[derive(Clone, Copy, Debug)]
pub struct RefShape {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Softmax scale.
    pub scale: f64,
}

/// Computes attention for every sequence in f64. Returns `[tokens, num_heads, head_dim]`
/// like `q`; rows of tokens no sequence covers are zero.
pub fn reference_attention(shape: RefShape, q: &[f32], seqs: &[RefSeq<'_>]) -> Result<Vec<f64>> {
    let RefShape {
        num_heads: h,
        num_kv_heads: kvh,
        head_dim: d,
        scale,
    } = shape;
    if h == 0 || kvh == 0 || d == 0 || !h.is_multiple_of(kvh) {
        return Err(KernelError::HeadMismatch {
            num_heads: h,
            num_kv_heads: kvh,
        });
    }
    if !q.len().is_multiple_of(h * d) {
        return Err(KernelError::InvalidShape(
            "q is not [tokens, num_heads, head_dim]".into(),
        ));
    }
    let tokens = q.len() / (h * d);
    let group = h / kvh;
    let mut out = vec![0.0f64; q.len()];
    for (i, s) in seqs.iter().enumerate() {
        let (k, v) = (s.kv.k, s.kv.v);
        let ctx = s.context_len;
        let bad = |reason: &str| KernelError::InvalidSequence {
            seq: i,
            reason: reason.into(),
        };
        if Some(k.len()) != ctx.checked_mul(kvh * d) || v.len() != k.len() {
            return Err(bad(
                "k and v must both be [context_len, num_kv_heads, head_dim]",
            ));
        }
        if s.query_len == 0 || s.query_len > ctx || s.query_start + s.query_len > tokens {
            return Err(bad("query rows inconsistent with q or the context"));
        }
        for t in 0..s.query_len {
            let visible = ctx - s.query_len + t + 1;
            for head in 0..h {
                let kv_head = head / group;
                let qa = ((s.query_start + t) * h + head) * d;
                let qr = &q[qa..qa + d];
                let scores: Vec<f64> = (0..visible)
                    .map(|p| {
                        let ka = (p * kvh + kv_head) * d;
                        let dot: f64 = qr
                            .iter()
                            .zip(&k[ka..ka + d])
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum();
                        dot * scale
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|&x| (x - m).exp()).collect();
                let total: f64 = weights.iter().sum();
                let o = &mut out[qa..qa + d];
                for (p, &w) in weights.iter().enumerate() {
                    let va = (p * kvh + kv_head) * d;
                    for (x, &v) in o.iter_mut().zip(&v[va..va + d]) {
                        *x += w * f64::from(v);
                    }
                }
                for x in o.iter_mut() {
                    *x /= total;
                }
            }
        }
    }
    Ok(out)
}
