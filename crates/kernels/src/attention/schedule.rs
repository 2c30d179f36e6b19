//! Work decomposition, split-K and the merge.
//!
//! A unit is (sequence, KV head, block of query rows, range of tiles). Rows of a sequence
//! are numbered `token * group + head_in_group`, so a row block covers neighbouring tokens
//! (similar causal limits) and every query head of one KV head (K/V read once).
//!
//! **Split-K** (flash-decoding): when there are fewer (sequence, KV head, row block) units
//! than about four per thread, each sequence's tiles are cut into up to `S` contiguous
//! ranges, each computed as its own unit; `finalize` merges the partial `(m, l, acc)` of a
//! row's splits in a fixed order:
//! `M = max m_s`, `out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s`.
//! The plan depends only on the sequence metadata, the instruction set's width and the
//! thread count (or an explicit [`SplitPolicy`]), never on addressing — so paged and
//! contiguous runs of the same batch do the same arithmetic and agree bit for bit.

use crate::attention::spec::{SeqSpec, SplitPolicy};
use rayon::prelude::*;

/// One sequence as the tile loop sees it: its [`SeqSpec`] without the addressing, and the
/// work actually done for it (more than the spec asks only for the padded baseline).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeqWork {
    /// First query token in the flattened batch.
    pub query_start: usize,
    /// Real query tokens.
    pub query_len: usize,
    /// Query tokens computed (the padded baseline pads this to the batch's longest).
    pub q_rows: usize,
    /// Tokens in the cache, including the new ones; the causal limits derive from it.
    pub context_len: usize,
    /// Positions the kernel may read (`context_len`, or the padded length).
    pub read_len: usize,
    /// Visit every tile up to `read_len` even where all positions are masked.
    pub pad_work: bool,
}

impl SeqWork {
    /// The work of `s`, computing `q_rows` query rows over `read_len` positions.
    pub(crate) fn new<K>(s: &SeqSpec<K>, q_rows: usize, read_len: usize, pad_work: bool) -> Self {
        Self {
            query_start: s.query_start,
            query_len: s.query_len,
            q_rows,
            context_len: s.context_len,
            read_len,
            pad_work,
        }
    }
}

/// A piece of work for one thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unit {
    pub seq: usize,
    pub kv_head: usize,
    pub row_begin: usize,
    pub row_end: usize,
    pub tile_begin: usize,
    pub tile_end: usize,
    /// Where its partial rows start in the partial buffer.
    pub offset: usize,
}

/// Whether a sequence uses the dot shape (vectors along `head_dim`): decode with fewer
/// query heads per KV head than half a vector.
pub(crate) fn use_dot(q_rows: usize, group: usize, lanes: usize) -> bool {
    q_rows == 1 && 2 * group < lanes
}

/// All units of a call and how to find a row's partials.
#[derive(Debug)]
pub(crate) struct Plan {
    pub units: Vec<Unit>,
    /// Per sequence: index of its first unit, rows per block, row blocks, splits.
    layout: Vec<(usize, usize, usize, usize)>,
    pub partial_len: usize,
    /// Multiply-adds of one score pass over all units (rows x positions x head_dim): the
    /// size of the call, for deciding whether threads pay.
    pub work: usize,
}

/// Geometry the planner needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanShape {
    pub num_kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub tile_size: usize,
    pub lanes: usize,
    pub threads: usize,
}

pub(crate) fn plan(seqs: &[SeqWork], shape: PlanShape, policy: SplitPolicy) -> Plan {
    let rows_per_block = |s: &SeqWork| {
        if use_dot(s.q_rows, shape.group, shape.lanes) {
            shape.group
        } else {
            (16 * shape.lanes).max(32)
        }
    };
    let base_units: usize = seqs
        .iter()
        .map(|s| shape.num_kv_heads * (s.q_rows * shape.group).div_ceil(rows_per_block(s)))
        .sum();
    let target = 4 * shape.threads;
    let mut units = Vec::new();
    let mut layout = Vec::with_capacity(seqs.len());
    let mut offset = 0;
    let mut work = 0usize;
    for (i, s) in seqs.iter().enumerate() {
        let rows = s.q_rows * shape.group;
        let rpb = rows_per_block(s);
        let blocks = rows.div_ceil(rpb);
        let tiles = s.read_len.div_ceil(shape.tile_size);
        let splits = match policy {
            SplitPolicy::Off => 1,
            SplitPolicy::Fixed(n) => n.clamp(1, tiles.max(1)),
            SplitPolicy::Auto if shape.threads <= 1 || base_units >= target => 1,
            SplitPolicy::Auto => {
                // Splits shorter than ~256 positions cost more in merging than they gain.
                let min_tiles = (256 / shape.tile_size).max(1);
                target.div_ceil(base_units).min(tiles / min_tiles).max(1)
            }
        };
        work = work.saturating_add(
            (rows * shape.num_kv_heads)
                .saturating_mul(s.read_len)
                .saturating_mul(shape.head_dim),
        );
        layout.push((units.len(), rpb, blocks, splits));
        for kv_head in 0..shape.num_kv_heads {
            for b in 0..blocks {
                let (row_begin, row_end) = (b * rpb, ((b + 1) * rpb).min(rows));
                for sp in 0..splits {
                    units.push(Unit {
                        seq: i,
                        kv_head,
                        row_begin,
                        row_end,
                        tile_begin: sp * tiles / splits,
                        tile_end: (sp + 1) * tiles / splits,
                        offset,
                    });
                    offset += (row_end - row_begin) * (shape.head_dim + 2);
                }
            }
        }
    }
    Plan {
        units,
        layout,
        partial_len: offset,
        work,
    }
}

/// Splits the partial buffer into one disjoint slice per unit, in unit order.
pub(crate) fn unit_slices<'a>(
    plan: &Plan,
    mut partial: &'a mut [f32],
    head_dim: usize,
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(plan.units.len());
    for u in &plan.units {
        let (head, rest) = partial.split_at_mut((u.row_end - u.row_begin) * (head_dim + 2));
        out.push(head);
        partial = rest;
    }
    out
}

/// Merges each row's splits and writes normalised outputs into `out`
/// (`[tokens, num_heads, head_dim]`). Tokens no sequence covers are left untouched.
pub(crate) fn finalize(
    plan: &Plan,
    serial: bool,
    seqs: &[SeqWork],
    shape: PlanShape,
    num_heads: usize,
    partial: &[f32],
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let tokens = out.len() / (num_heads * d);
    let mut owner = vec![usize::MAX; tokens];
    for (i, s) in seqs.iter().enumerate() {
        for slot in &mut owner[s.query_start..s.query_start + s.query_len] {
            *slot = i;
        }
    }
    let merge_token = |(tok, (o, &i)): (usize, (&mut [f32], &usize))| {
        if i == usize::MAX {
            return;
        }
        let t = tok - seqs[i].query_start;
        let (first, rpb, blocks, splits) = plan.layout[i];
        for head in 0..num_heads {
            let (kv_head, g) = (head / shape.group, head % shape.group);
            let r = t * shape.group + g;
            let (b, within) = (r / rpb, r % rpb);
            let base = first + (kv_head * blocks + b) * splits;
            let part = |sp: usize| {
                let at = plan.units[base + sp].offset + within * (d + 2);
                &partial[at..at + d + 2]
            };
            let dst = &mut o[head * d..(head + 1) * d];
            if splits == 1 {
                let p = part(0);
                let inv = if p[1] > 0.0 { 1.0 / p[1] } else { 0.0 };
                for (x, &a) in dst.iter_mut().zip(&p[2..]) {
                    *x = a * inv;
                }
                continue;
            }
            let big_m = (0..splits)
                .map(|sp| part(sp)[0])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0f32;
            dst.fill(0.0);
            for sp in 0..splits {
                let p = part(sp);
                if p[1] == 0.0 {
                    continue; // this split saw no visible position of the row
                }
                let wgt = (p[0] - big_m).exp();
                total += wgt * p[1];
                for (x, &a) in dst.iter_mut().zip(&p[2..]) {
                    *x += wgt * a;
                }
            }
            let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
            for x in dst.iter_mut() {
                *x *= inv;
            }
        }
    };
    // Merging is a pass over the output; below ~64K elements (or where the units ran on
    // one thread) a second parallel dispatch costs more than it saves.
    if serial || out.len() < 1 << 16 {
        out.chunks_mut(num_heads * d)
            .zip(owner.iter())
            .enumerate()
            .for_each(merge_token);
    } else {
        out.par_chunks_mut(num_heads * d)
            .zip(owner.par_iter())
            .enumerate()
            .for_each(merge_token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(query_len: usize, context_len: usize) -> SeqWork {
        SeqWork {
            query_start: 0,
            query_len,
            q_rows: query_len,
            context_len,
            read_len: context_len,
            pad_work: false,
        }
    }

    fn shape(threads: usize) -> PlanShape {
        PlanShape {
            num_kv_heads: 3,
            group: 3,
            head_dim: 64,
            tile_size: 16,
            lanes: 16,
            threads,
        }
    }

    #[test]
    fn splits_only_when_threads_would_idle() {
        // 3 units for 8 threads: split; 3 x 64 units: no split.
        let p = plan(&[seq(1, 4096)], shape(8), SplitPolicy::Auto);
        assert!(p.units.len() > 3);
        let ranges: Vec<_> = p
            .units
            .iter()
            .filter(|u| u.kv_head == 0)
            .map(|u| (u.tile_begin, u.tile_end))
            .collect();
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert_eq!(ranges.last().map(|r| r.1), Some(256));
        assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
        let many: Vec<SeqWork> = (0..64).map(|_| seq(1, 4096)).collect();
        assert_eq!(plan(&many, shape(8), SplitPolicy::Auto).units.len(), 64 * 3);
        // Short contexts are never split.
        assert_eq!(
            plan(&[seq(1, 200)], shape(8), SplitPolicy::Auto)
                .units
                .len(),
            3
        );
        assert_eq!(
            plan(&[seq(1, 4096)], shape(1), SplitPolicy::Auto)
                .units
                .len(),
            3
        );
    }

    #[test]
    fn fixed_split_is_capped_by_tiles_and_partials_are_disjoint() {
        let p = plan(&[seq(1, 20), seq(40, 100)], shape(2), SplitPolicy::Fixed(5));
        // 20 tokens = 2 tiles: 2 splits per head; 100 tokens = 7 tiles: 5 splits (one row block).
        assert_eq!(p.units.len(), 3 * 2 + 3 * 5);
        let mut end = 0;
        for u in &p.units {
            assert_eq!(u.offset, end);
            end += (u.row_end - u.row_begin) * 66;
        }
        assert_eq!(end, p.partial_len);
    }
}
