//! The safe entry points: paged, contiguous and padded attention over a flattened batch.
//!
//! A call takes queries `q` shaped `[total_query_tokens, num_heads, head_dim]` and, per
//! sequence, a [`SeqSpec`]: its first query token, how many query tokens it has (1 for
//! decode, more for a prefill chunk), its context length (tokens in the cache *including*
//! the new ones, already written) and where its K/V live. New token `i` of a sequence
//! attends to positions `0 ..= context_len - query_len + i`. Decode and prefill sequences
//! may be mixed in one call. Everything is validated before any work starts.

use crate::cache::KvCache;
use crate::contiguous::{ContiguousKv, ContiguousRun};
use crate::dtype::KvElem;
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::schedule::{finalize, plan, unit_slices, PlanShape, SeqWork, SplitPolicy, Unit};
use crate::source::{ContiguousSource, KvSource, PagedSource};
use crate::storage::KvView;
use crate::tile::{RunCtx, Scratch};
use crate::validate::{check_call, Call};
use pagedattn_kv::BlockId;
use rayon::prelude::*;

/// One sequence of a flattened batch; `kv` says where its K/V live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpec<K> {
    /// Index of its first query token in `q`.
    pub query_start: usize,
    /// Query tokens (1 for decode).
    pub query_len: usize,
    /// Tokens in the cache including the new ones (`>= query_len`).
    pub context_len: usize,
    /// Block table (paged) or run (contiguous).
    pub kv: K,
}

/// A sequence whose K/V are in a [`KvCache`], found through its block table.
pub type PagedSeq<'a> = SeqSpec<&'a [BlockId]>;
/// A sequence whose K/V are a run of a [`ContiguousKv`].
pub type ContiguousSeq = SeqSpec<ContiguousRun>;

/// Parameters of an attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Query heads (a multiple of the store's KV heads).
    pub num_heads: usize,
    /// Elements per head; must equal the store's.
    pub head_dim: usize,
    /// Softmax scale applied to `q . k`.
    pub scale: f32,
    /// Instruction set; `None` uses [`Isa::selected`].
    pub isa: Option<Isa>,
    /// Split-K policy.
    pub split: SplitPolicy,
    /// Tile length in tokens for the contiguous and padded kernels (the paged kernel's
    /// tile is the cache's block size). Equal tiles make paged and contiguous outputs
    /// bitwise identical.
    pub tile_size: usize,
}

impl AttentionConfig {
    /// Defaults: scale `1 / sqrt(head_dim)`, selected ISA, automatic split, tiles of 16.
    pub fn new(num_heads: usize, head_dim: usize) -> Self {
        Self {
            num_heads,
            head_dim,
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            isa: None,
            split: SplitPolicy::Auto,
            tile_size: 16,
        }
    }

    /// Forces an instruction set.
    #[must_use]
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = Some(isa);
        self
    }

    /// Sets the split-K policy.
    #[must_use]
    pub fn with_split(mut self, split: SplitPolicy) -> Self {
        self.split = split;
        self
    }

    /// Sets the contiguous/padded tile length.
    #[must_use]
    pub fn with_tile_size(mut self, tile_size: usize) -> Self {
        self.tile_size = tile_size;
        self
    }

    /// Sets the softmax scale.
    #[must_use]
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }
}

/// Attention over a block-paged cache (the paged kernel).
pub fn paged_attention(
    cfg: &AttentionConfig,
    cache: &KvCache,
    layer: usize,
    q: &[f32],
    seqs: &[PagedSeq<'_>],
    out: &mut [f32],
) -> Result<()> {
    let c = cache.config();
    let call = check_call(cfg, c.num_kv_heads, c.head_dim, c.block_size, q, out, seqs)?;
    for (i, s) in seqs.iter().enumerate() {
        let needed = s.context_len.div_ceil(c.block_size);
        if s.kv.len() < needed {
            return Err(KernelError::TableTooShort {
                seq: i,
                context_len: s.context_len,
                needed,
                have: s.kv.len(),
            });
        }
        if let Some(b) = s.kv[..needed].iter().find(|b| b.index() >= c.num_blocks) {
            return Err(KernelError::BlockOutOfRange {
                block: b.0,
                num_blocks: c.num_blocks,
            });
        }
    }
    let works: Vec<SeqWork> = seqs
        .iter()
        .map(|s| work(s, s.query_len, s.context_len, false))
        .collect();
    let (kview, vview) = cache.layer_view(layer)?;
    let geom = (c.num_kv_heads, c.block_size, c.head_dim);
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
        .map(|s| work(s, s.query_len, s.context_len, false))
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
    let works: Vec<SeqWork> = seqs.iter().map(|s| work(s, max_q, max_ctx, true)).collect();
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
    let c = store.config();
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

fn work<K>(s: &SeqSpec<K>, q_rows: usize, read_len: usize, pad_work: bool) -> SeqWork {
    SeqWork {
        q_start: s.query_start,
        q_len: s.query_len,
        q_rows,
        context_len: s.context_len,
        read_len,
        pad_work,
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
        lanes: call.isa.lanes(),
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
            SCRATCH.with(|s| run_one(call.isa, &ctx, src, unit, &mut s.borrow_mut(), o));
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

fn run_one<T: KvElem, S: KvSource<T>>(
    isa: Isa,
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    match isa {
        // SAFETY: `check_call` returned this ISA only after `is_available()` confirmed the
        // CPU has every feature the entry function is compiled with.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { run_unit_avx512(ctx, src, unit, scratch, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { run_unit_avx2(ctx, src, unit, scratch, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { run_unit_neon(ctx, src, unit, scratch, out) },
        _ => run_unit_scalar(ctx, src, unit, scratch, out),
    }
}

/// Runs one work unit with Avx2.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (`Isa::Avx2.is_available()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_unit_avx2<T: KvElem, S: KvSource<T>>(
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::avx2::Avx2::new() };
    crate::tile::run_unit::<_, T, S, 8>(l, ctx, src, unit, scratch, out);
}

/// Runs one work unit with Avx512.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL, AVX2, FMA and F16C (`Isa::Avx512.is_available()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn run_unit_avx512<T: KvElem, S: KvSource<T>>(
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::avx512::Avx512::new() };
    crate::tile::run_unit::<_, T, S, 16>(l, ctx, src, unit, scratch, out);
}

/// Runs one work unit with Neon.
///
/// # Safety
/// The CPU must have NEON (`Isa::Neon.is_available()`).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn run_unit_neon<T: KvElem, S: KvSource<T>>(
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::neon::Neon::new() };
    crate::tile::run_unit::<_, T, S, 8>(l, ctx, src, unit, scratch, out);
}

/// Runs one work unit on the scalar path.
fn run_unit_scalar<T: KvElem, S: KvSource<T>>(
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let l = crate::isa::scalar::Scalar::token();
    crate::tile::run_unit::<_, T, S, 4>(l, ctx, src, unit, scratch, out);
}
