//! The safe entry points: paged, contiguous and padded attention over a flattened batch.
//!
//! A call takes queries `q` shaped `[total_query_tokens, num_heads, head_dim]` and, per
//! sequence, a [`SeqSpec`](spec::SeqSpec): its first query token, how many query tokens it has (1 for
//! decode, more for a prefill chunk), its context length (tokens in the cache *including*
//! the new ones, already written) and where its K/V live. New token `i` of a sequence
//! attends to positions `0 ..= context_len - query_len + i`. Decode and prefill sequences
//! may be mixed in one call. Everything is validated before any work starts.

pub(crate) mod dot;
pub(crate) mod kernel;
pub(crate) mod reference;
pub(crate) mod rows;
pub(crate) mod schedule;
pub(crate) mod source;
pub(crate) mod spec;
pub(crate) mod tile;
pub(crate) mod unit;
pub(crate) mod validate;

use crate::attention::schedule::{finalize, plan, unit_slices, PlanShape, SeqWork, Unit};
use crate::attention::source::{ContiguousSource, KvSource, PagedSource};
use crate::attention::spec::{AttentionConfig, ContiguousSeq, PagedSeq};
use crate::attention::tile::{RunCtx, Scratch};
use crate::attention::unit::UnitOp;
use crate::attention::validate::{check_call, Call};
use crate::cpu::entry::run_lanes;
use crate::error::{KernelError, Result};
use crate::store::buffer::KvView;
use crate::store::cache::KvCache;
use crate::store::contiguous::ContiguousKv;
use crate::store::dtype::KvElem;
use rayon::prelude::*;

/// Attention over a block-paged cache (the paged kernel).
pub fn paged_attention(
    cfg: &AttentionConfig,
    cache: &KvCache,
    layer: usize,
    q: &[f32],
    seqs: &[PagedSeq<'_>],
    out: &mut [f32],
) -> Result<()> {
    let (c, block_size, num_blocks) = (cache.shape(), cache.block_size(), cache.num_blocks());
    let call = check_call(cfg, c.num_kv_heads, c.head_dim, block_size, q, out, seqs)?;
    for (i, s) in seqs.iter().enumerate() {
        let needed = s.context_len.div_ceil(block_size);
        if s.kv.len() < needed {
            return Err(KernelError::TableTooShort {
                seq: i,
                context_len: s.context_len,
                needed,
                have: s.kv.len(),
            });
        }
        if let Some(b) = s.kv[..needed].iter().find(|b| b.index() >= num_blocks) {
            return Err(KernelError::BlockOutOfRange {
                block: b.0,
                num_blocks,
            });
        }
    }
    let works: Vec<SeqWork> = seqs
        .iter()
        .map(|s| SeqWork::new(s, s.query_len, s.context_len, false))
        .collect();
    let (kview, vview) = cache.layer_view(layer)?;
    let geom = (c.num_kv_heads, block_size, c.head_dim);
    match (kview, vview) {
        (KvView::F32(k), KvView::F32(v)) => {
            run(&call, cfg, q, &works, &paged(k, v, seqs, geom), out);
        }
        (KvView::F16(k), KvView::F16(v)) => {
            run(&call, cfg, q, &works, &paged(k, v, seqs, geom), out);
        }
        (KvView::Bf16(k), KvView::Bf16(v)) => {
            run(&call, cfg, q, &works, &paged(k, v, seqs, geom), out);
        }
        _ => {
            return Err(KernelError::InvalidShape(
                "K and V element types differ".into(),
            ))
        }
    }
    Ok(())
}

/// Attention over contiguous runs (the contiguous baseline): the same tile loop, fed
/// `cfg.tile_size`-token tiles cut from each run.
pub fn contiguous_attention(
    cfg: &AttentionConfig,
    store: &ContiguousKv,
    layer: usize,
    q: &[f32],
    seqs: &[ContiguousSeq],
    out: &mut [f32],
) -> Result<()> {
    let works: Vec<SeqWork> = seqs
        .iter()
        .map(|s| SeqWork::new(s, s.query_len, s.context_len, false))
        .collect();
    contiguous_like(cfg, store, layer, q, seqs, &works, out)
}

/// The static-batching baseline: every sequence is computed as if it were as long as the
/// batch's longest context (masked), with queries padded to the longest query — the work
/// a padded `[batch, max_len]` tensor costs. Each run must hold that many positions.
pub fn padded_attention(
    cfg: &AttentionConfig,
    store: &ContiguousKv,
    layer: usize,
    q: &[f32],
    seqs: &[ContiguousSeq],
    out: &mut [f32],
) -> Result<()> {
    let max_ctx = seqs.iter().map(|s| s.context_len).max().unwrap_or(0);
    let max_q = seqs.iter().map(|s| s.query_len).max().unwrap_or(0);
    let works: Vec<SeqWork> = seqs
        .iter()
        .map(|s| SeqWork::new(s, max_q, max_ctx, true))
        .collect();
    contiguous_like(cfg, store, layer, q, seqs, &works, out)
}

fn contiguous_like(
    cfg: &AttentionConfig,
    store: &ContiguousKv,
    layer: usize,
    q: &[f32],
    seqs: &[ContiguousSeq],
    works: &[SeqWork],
    out: &mut [f32],
) -> Result<()> {
    let c = store.shape();
    let call = check_call(cfg, c.num_kv_heads, c.head_dim, cfg.tile_size, q, out, seqs)?;
    let have = store.layer_len();
    for (i, (s, w)) in seqs.iter().zip(works).enumerate() {
        let needed = (c.num_kv_heads - 1)
            .checked_mul(s.kv.head_stride)
            .and_then(|x| x.checked_add(s.kv.offset))
            .and_then(|x| x.checked_add(w.read_len.checked_mul(c.head_dim)?))
            .unwrap_or(usize::MAX);
        if needed > have {
            return Err(KernelError::RunOutOfRange {
                seq: i,
                needed,
                have,
            });
        }
    }
    let (kview, vview) = store.layer_view(layer)?;
    let geom = (cfg.tile_size, c.head_dim);
    match (kview, vview) {
        (KvView::F32(k), KvView::F32(v)) => {
            run(&call, cfg, q, works, &contiguous(k, v, seqs, geom), out);
        }
        (KvView::F16(k), KvView::F16(v)) => {
            run(&call, cfg, q, works, &contiguous(k, v, seqs, geom), out);
        }
        (KvView::Bf16(k), KvView::Bf16(v)) => {
            run(&call, cfg, q, works, &contiguous(k, v, seqs, geom), out);
        }
        _ => {
            return Err(KernelError::InvalidShape(
                "K and V element types differ".into(),
            ))
        }
    }
    Ok(())
}

fn paged<'a, T>(
    k: &'a [T],
    v: &'a [T],
    seqs: &'a [PagedSeq<'a>],
    (num_kv_heads, block_size, head_dim): (usize, usize, usize),
) -> PagedSource<'a, T> {
    PagedSource {
        k,
        v,
        seqs,
        num_kv_heads,
        block_size,
        head_dim,
    }
}

fn contiguous<'a, T>(
    k: &'a [T],
    v: &'a [T],
    seqs: &'a [ContiguousSeq],
    (tile_size, head_dim): (usize, usize),
) -> ContiguousSource<'a, T> {
    ContiguousSource {
        k,
        v,
        seqs,
        tile_size,
        head_dim,
    }
}

/// Plans, runs every unit on rayon's pool and merges.
fn run<T: KvElem, S: KvSource<T>>(
    call: &Call,
    cfg: &AttentionConfig,
    q: &[f32],
    works: &[SeqWork],
    src: &S,
    out: &mut [f32],
) {
    let shape = PlanShape {
        num_kv_heads: call.num_kv_heads,
        group: cfg.num_heads / call.num_kv_heads,
        head_dim: cfg.head_dim,
        tile_size: call.tile_size,
        lanes: call.cpu.isa().lanes(),
        threads: rayon::current_num_threads(),
    };
    let ctx = RunCtx {
        q,
        num_heads: cfg.num_heads,
        group: shape.group,
        head_dim: cfg.head_dim,
        scale: cfg.scale,
        tile_size: call.tile_size,
        seqs: works,
    };
    let plan = plan(works, shape, cfg.split);
    PARTIAL.with(|cell| {
        // Reused across calls: every element a unit reads back it has written first, so
        // the buffer is never cleared (clearing a prefill's partials costs a memset of
        // megabytes per call).
        let mut partial = cell.take();
        if partial.len() < plan.partial_len {
            partial.resize(plan.partial_len, 0.0);
        }
        let slices = unit_slices(&plan, &mut partial[..plan.partial_len], cfg.head_dim);
        let one = |(unit, o): (&Unit, &mut [f32])| {
            SCRATCH.with(|s| {
                let scratch = &mut s.borrow_mut();
                run_lanes(call.cpu, UnitOp::new(&ctx, src, unit, scratch, o));
            });
        };
        // Handing work to the pool and waiting costs a wake-up and a context switch
        // (~4-10 us); with one thread, one unit or a call that computes in about that
        // time on one thread there is nothing to gain from it.
        let serial = shape.threads <= 1 || plan.work <= SERIAL_WORK;
        if serial || plan.units.len() <= 1 {
            plan.units.iter().zip(slices).for_each(one);
        } else {
            plan.units.par_iter().zip(slices).for_each(one);
        }
        finalize(
            &plan,
            serial,
            works,
            shape,
            cfg.num_heads,
            &partial[..plan.partial_len],
            out,
        );
        cell.set(partial);
    });
}

/// Calls with at most this many multiply-adds per score pass (query rows x positions read
/// x `head_dim`, summed over units) run on the calling thread: one sequence of 16 tokens
/// at 32 heads x 128 (512 KiB of f32 K/V). From L2 such a call takes 8 us on one core,
/// where waking a second thread cost as much as it saved (11.9 us in the pool on two).
/// Twice that work was still faster on one core from L2 (16 us) but took 30-34 us when
/// its K/V came from the last-level cache (bench kernels, decode 1 x 32, whose three
/// layouts together outgrow L2) — one core's share of LLC bandwidth — which is where a
/// model's K/V come from.
const SERIAL_WORK: usize = 1 << 16;

thread_local! {
    /// Per worker thread: tile buffers, kept across units and calls (a decode call is
    /// tens of microseconds; allocating them per unit showed up in profiles).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    /// Per calling thread: the partial-results buffer of the last call.
    static PARTIAL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}
