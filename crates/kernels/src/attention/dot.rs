//! The dot shape of the tile loop (decode with few query heads per KV head): vectors run
//! along `head_dim`, a score is a dot product and `p V` an axpy, with K/V read and widened
//! straight from the tile. Nothing is wasted when a KV head has a single query row.

use crate::attention::schedule::Unit;
use crate::attention::source::KvSource;
use crate::attention::tile::{reset, tiles_needed, RunCtx, Scratch};
use crate::cpu::lanes::{bf16_pair_source, exp, load_t, Lanes};
use crate::store::dtype::{DType, KvElem};

/// Scores of rows `r0 .. r0 + R` against the tile's `n` keys (`D` as in `rows::scores`):
/// each key chunk is loaded (and widened) once for all `R` rows, which is what makes a
/// KV head with several query heads cheaper than that many single rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scores_rows<L: Lanes, T: KvElem, const D: usize, const R: usize>(
    isa: L,
    (q, dp, r0): (&[f32], usize, usize),
    k: &[T],
    n: usize,
    d: usize,
    (s, sp): (&mut [f32], usize),
    ahead: &mut Option<Ahead<'_, T>>,
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let full = d / w;
    let q = &q[r0 * dp..(r0 + R) * dp];
    let mut j = 0;
    // Four keys at a time: their horizontal sums share one shuffle tree per row.
    while j + 4 <= n {
        let mut v = [[isa.zero(); 4]; R];
        for t in 0..4 {
            let a = key_dot::<L, T, R>(isa, q, dp, &k[(j + t) * d..(j + t + 1) * d], full);
            for r in 0..R {
                v[r][t] = a[r];
            }
            prefetch_key(isa, ahead);
        }
        for (r, vr) in v.iter().enumerate() {
            let sums = isa.hsum4(*vr);
            for (t, &x) in sums.iter().enumerate() {
                let kr = &k[(j + t) * d..(j + t + 1) * d];
                s[(r0 + r) * sp + j + t] = x + dot_tail(&q[r * dp..], kr, full * w, d);
            }
        }
        j += 4;
    }
    while j < n {
        let kr = &k[j * d..(j + 1) * d];
        let a = key_dot::<L, T, R>(isa, q, dp, kr, full);
        for (r, &ar) in a.iter().enumerate() {
            s[(r0 + r) * sp + j] = isa.reduce_add(ar) + dot_tail(&q[r * dp..], kr, full * w, d);
        }
        prefetch_key(isa, ahead);
        j += 1;
    }
}

/// Whether the dot shape reads bf16 keys with [`Lanes::load_bf16_pair`]'s permuted lanes
/// (and so keeps its queries permuted the same way).
#[inline(always)]
fn pair_permuted<L: Lanes, T: KvElem>() -> bool {
    T::DTYPE == DType::Bf16 && L::BF16_PAIR_PERMUTED
}

/// One key's partial dot products with rows `0..R` of `q` (row stride `dp`) over the first
/// `full` vectors of the key, one vector per row (two FMA chains each, added at the end).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn key_dot<L: Lanes, T: KvElem, const R: usize>(
    isa: L,
    q: &[f32],
    dp: usize,
    kr: &[T],
    full: usize,
) -> [L::V; R] {
    // Plain loops, no closures: a closure is compiled without the caller's target
    // features, and the intrinsics inside it would not inline.
    let w = L::W;
    let mut a = [[isa.zero(); 2]; R];
    let mut c = 0;
    let pairs = pair_permuted::<L, T>().then(|| T::as_bits(kr)).flatten();
    while c + 2 <= full {
        let (k0, k1) = if let Some(bits) = pairs {
            // q was stored in the pair's lane order (see `run_dot`).
            isa.load_bf16_pair(&bits[c * w..c * w + 2 * w])
        } else {
            (
                load_t(isa, &kr[c * w..c * w + w]),
                load_t(isa, &kr[(c + 1) * w..(c + 1) * w + w]),
            )
        };
        for r in 0..R {
            let at = r * dp + c * w;
            a[r][0] = isa.fma(isa.load(&q[at..at + w]), k0, a[r][0]);
            a[r][1] = isa.fma(isa.load(&q[at + w..at + 2 * w]), k1, a[r][1]);
        }
        c += 2;
    }
    if c < full {
        let k0 = load_t(isa, &kr[c * w..c * w + w]);
        for r in 0..R {
            let at = r * dp + c * w;
            a[r][0] = isa.fma(isa.load(&q[at..at + w]), k0, a[r][0]);
        }
    }
    let mut out = [isa.zero(); R];
    for r in 0..R {
        out[r] = isa.add(a[r][0], a[r][1]);
    }
    out
}

/// `acc[r] = acc[r] * corr[r] + sum_j p[r][j] * v[j]` for rows `r0 .. r0 + R`, each value
/// chunk loaded (and widened) once for all `R` rows; two chains per row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn axpy_rows<L: Lanes, T: KvElem, const D: usize, const R: usize>(
    isa: L,
    (acc, dp, r0): (&mut [f32], usize, usize),
    corr: &[f32],
    (p, sp): (&[f32], usize),
    v: &[T],
    n: usize,
    d: usize,
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let full = d / w;
    let acc = &mut acc[r0 * dp..(r0 + R) * dp];
    let p = &p[r0 * sp..(r0 + R) * sp];
    let corr = &corr[r0..r0 + R];
    let vv = |j: usize, c: usize| load_t(isa, &v[j * d + c * w..j * d + c * w + w]);
    for c in 0..full {
        let mut a = [[isa.zero(); 2]; R];
        for (r, ar) in a.iter_mut().enumerate() {
            let at = r * dp + c * w;
            ar[0] = isa.mul(isa.load(&acc[at..at + w]), isa.splat(corr[r]));
        }
        let mut j = 0;
        while j + 2 <= n {
            let (v0, v1) = (vv(j, c), vv(j + 1, c));
            for (r, ar) in a.iter_mut().enumerate() {
                ar[0] = isa.fma(isa.splat(p[r * sp + j]), v0, ar[0]);
                ar[1] = isa.fma(isa.splat(p[r * sp + j + 1]), v1, ar[1]);
            }
            j += 2;
        }
        if j < n {
            let v0 = vv(j, c);
            for (r, ar) in a.iter_mut().enumerate() {
                ar[0] = isa.fma(isa.splat(p[r * sp + j]), v0, ar[0]);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            let at = r * dp + c * w;
            isa.store(&mut acc[at..at + w], isa.add(ar[0], ar[1]));
        }
    }
    for r in 0..R {
        for dd in full * w..d {
            let mut x = acc[r * dp + dd] * corr[r];
            for j in 0..n {
                x += p[r * sp + j] * v[j * d + dd].to_f32();
            }
            acc[r * dp + dd] = x;
        }
    }
}

/// [`axpy_rows`] with every accumulator of the `R` rows in registers (`CH` vectors per
/// row, `d == CH * W`): keys outer, so each FMA chain advances once per key and the
/// `R * CH` chains run side by side (the chunked loop of `axpy_rows` has two chains per
/// row and waits on FMA latency when `R` is small).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn axpy_regs<L: Lanes, T: KvElem, const R: usize, const CH: usize>(
    isa: L,
    (acc, dp, r0): (&mut [f32], usize, usize),
    corr: &[f32],
    (p, sp): (&[f32], usize),
    v: &[T],
    n: usize,
    d: usize,
) {
    let w = L::W;
    let acc = &mut acc[r0 * dp..(r0 + R) * dp];
    let p = &p[r0 * sp..(r0 + R) * sp];
    let mut a = [[isa.zero(); CH]; R];
    for r in 0..R {
        let cr = isa.splat(corr[r0 + r]);
        for c in 0..CH {
            let at = r * dp + c * w;
            a[r][c] = isa.mul(isa.load(&acc[at..at + w]), cr);
        }
    }
    for (j, vj) in v.chunks_exact(d).take(n).enumerate() {
        let vj = &vj[..CH * w];
        let mut pj = [isa.zero(); R];
        for r in 0..R {
            pj[r] = isa.splat(p[r * sp + j]);
        }
        for c in 0..CH {
            let x = load_t(isa, &vj[c * w..(c + 1) * w]);
            for r in 0..R {
                a[r][c] = isa.fma(pj[r], x, a[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..CH {
            let at = r * dp + c * w;
            isa.store(&mut acc[at..at + w], a[r][c]);
        }
    }
}

/// `acc += p V` for rows `r0 .. r0 + R`: in registers ([`axpy_regs`]) where the rows'
/// accumulators fit (at most 16 vectors on 32-register ISAs, 8 otherwise), else chunked
/// ([`axpy_rows`]). The choice depends on the shape only.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn axpy<L: Lanes, T: KvElem, const D: usize, const R: usize>(
    isa: L,
    rows: (&mut [f32], usize, usize),
    corr: &[f32],
    ps: (&[f32], usize),
    v: &[T],
    n: usize,
    d: usize,
) {
    let budget = if L::PAIR_GROUPS { 16 } else { 8 };
    let whole = D > 0 && D.is_multiple_of(L::W);
    match D / L::W {
        8 if whole && R * 8 <= budget => axpy_regs::<L, T, R, 8>(isa, rows, corr, ps, v, n, D),
        4 if whole && R * 4 <= budget => axpy_regs::<L, T, R, 4>(isa, rows, corr, ps, v, n, D),
        2 if whole && R * 2 <= budget => axpy_regs::<L, T, R, 2>(isa, rows, corr, ps, v, n, D),
        _ => axpy_rows::<L, T, D, R>(isa, rows, corr, ps, v, n, d),
    }
}

/// Calls `$f::<R>` over rows `0..rows` in chunks of 4, then one chunk of 3, 2 or 1: every
/// chunk rereads the tile, so three rows (a GQA group of 3) take one pass, not two.
macro_rules! by_rows {
    ($rows:expr, |$r0:ident| $body4:expr, $body3:expr, $body2:expr, $body1:expr) => {{
        let mut $r0 = 0;
        while $r0 < $rows {
            match $rows - $r0 {
                1 => {
                    $body1;
                    $r0 += 1;
                }
                2 => {
                    $body2;
                    $r0 += 2;
                }
                3 => {
                    $body3;
                    $r0 += 3;
                }
                _ => {
                    $body4;
                    $r0 += 4;
                }
            }
        }
    }};
}

/// `sum q[dd] * k[dd]` over `from..d`: the elements past the last whole vector (head sizes
/// that are not a multiple of `W`; empty otherwise). A plain function, not a closure, so it
/// inlines into the caller's target features.
#[inline(always)]
fn dot_tail<T: KvElem>(q: &[f32], k: &[T], from: usize, d: usize) -> f32 {
    let mut x = 0.0;
    for dd in from..d {
        x += q[dd] * k[dd].to_f32();
    }
    x
}

/// The K and V tile ahead, cut into one piece per key of the current tile: spreading the
/// prefetches over the current tile's keys keeps a steady number of misses in flight
/// instead of flooding the fill buffers at once.
pub(crate) struct Ahead<'a, T> {
    k: std::slice::Chunks<'a, T>,
    v: std::slice::Chunks<'a, T>,
}

impl<'a, T> Ahead<'a, T> {
    /// Pieces of `(k, v)` for a tile of `keys` keys.
    fn new((k, v): (&'a [T], &'a [T]), keys: usize) -> Self {
        let keys = keys.max(1);
        Self {
            k: k.chunks(k.len().div_ceil(keys).max(1)),
            v: v.chunks(v.len().div_ceil(keys).max(1)),
        }
    }
}

/// While a key computes, the next piece of the K and V tiles ahead (if any), into L1.
/// (16-bit tiles went to L2 for a while: when the value loop still waited on FMA latency,
/// L1 prefetches at a 16 KiB distance held every fill buffer and stalled the loop. With
/// the register-resident value loop and an 8 KiB distance, L1 was as fast for f16 and
/// faster for bf16 — bench kernels --quick, bf16 16 x 1024 paged 11.23-11.31 ms against
/// 11.58-11.69 — and the paged/contiguous ratio at that point went from 1.02-1.04 to
/// 0.98-1.00.)
#[inline(always)]
fn prefetch_key<L: Lanes, T>(isa: L, ahead: &mut Option<Ahead<'_, T>>) {
    if let Some(a) = ahead {
        if let Some(k) = a.k.next() {
            isa.prefetch(k);
        }
        if let Some(v) = a.v.next() {
            isa.prefetch(v);
        }
    }
}

/// How far ahead the dot shape prefetches, in bytes of K (and as much V): one f32 tile of
/// 16 tokens x 128 (two bf16 tiles). With 16-bit storage or smaller heads a tile is
/// smaller and computes sooner, so the distance is counted in bytes, not tiles. 16 KiB was
/// best while the value loop waited on FMA latency; once it kept every accumulator in
/// registers, 4-8 KiB read DRAM faster on both paged and contiguous runs (bench kernels
/// --quick, alternating runs: f32 16 x 1024 19.4 ms at 8 KiB against 19.8-20.4 at 16 KiB,
/// bf16 11.4-11.5 against 11.5-11.8, and 32 KiB slower still).
const PREFETCH_BYTES: usize = 8 << 10;

/// The dot shape: few rows, vectors along `head_dim`, K/V read (and widened) straight
/// from the tile.
#[inline(always)]
pub(crate) fn run_dot<L: Lanes, T: KvElem, S: KvSource<T>, const D: usize>(
    isa: L,
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let (w, d, bs) = (L::W, ctx.head_dim, ctx.tile_size);
    let seq = &ctx.seqs[unit.seq];
    let rows = unit.row_end - unit.row_begin;
    // Rows padded to whole vectors, so loads along head_dim never run past a row.
    let dp = d.div_ceil(w) * w;
    let Scratch {
        q,
        acc,
        s,
        m,
        l,
        lim,
        corr,
        ..
    } = scratch;
    // One score row per query row, padded to whole vectors.
    let sp = bs.div_ceil(w) * w;
    reset(q, rows * dp, 0.0);
    reset(acc, rows * dp, 0.0);
    reset(s, rows * sp, 0.0);
    reset(corr, rows, 1.0);
    reset(m, rows, f32::NEG_INFINITY);
    reset(l, rows, 0.0);
    lim.clear();
    for i in 0..rows {
        let r = unit.row_begin + i;
        if let Some(qr) = ctx.query_row(seq, unit.kv_head, r) {
            let row = &mut q[i * dp..i * dp + d];
            for (dst, &x) in row.iter_mut().zip(qr) {
                *dst = x * ctx.scale;
            }
            if pair_permuted::<L, T>() {
                // Whole pairs of vectors in the lane order `load_bf16_pair` gives the keys.
                let mut src = [0.0f32; 32];
                for pair in row[..d / w / 2 * 2 * w].chunks_exact_mut(2 * w) {
                    src[..2 * w].copy_from_slice(pair);
                    for (j, dst) in pair.iter_mut().enumerate() {
                        *dst = src[bf16_pair_source(w, j)];
                    }
                }
            }
        }
        lim.push(ctx.limit(seq, r));
    }
    let end = tiles_needed(seq, unit, bs, lim.iter().copied().max().unwrap_or(0));
    let ahead = (PREFETCH_BYTES / (bs * d * size_of::<T>()).max(1)).clamp(1, 8);
    for tile in unit.tile_begin..end {
        let pos0 = tile * bs;
        let n = bs.min(seq.read_len - pos0);
        let (kt, vt) = src.tile(unit.seq, unit.kv_head, tile, n);
        // The first pass over the rows prefetches the tile `ahead` tiles on.
        let mut pf = (tile + ahead < end).then(|| {
            let at = (tile + ahead) * bs;
            let next = src.tile(
                unit.seq,
                unit.kv_head,
                tile + ahead,
                bs.min(seq.read_len - at),
            );
            Ahead::new(next, n)
        });
        by_rows!(
            rows,
            |r0| scores_rows::<L, T, D, 4>(isa, (q, dp, r0), kt, n, d, (s, sp), &mut pf),
            scores_rows::<L, T, D, 3>(isa, (q, dp, r0), kt, n, d, (s, sp), &mut pf),
            scores_rows::<L, T, D, 2>(isa, (q, dp, r0), kt, n, d, (s, sp), &mut pf),
            scores_rows::<L, T, D, 1>(isa, (q, dp, r0), kt, n, d, (s, sp), &mut pf)
        );
        for i in 0..rows {
            let valid = lim[i].saturating_sub(pos0).min(n);
            let si = &mut s[i * sp..(i + 1) * sp];
            // Mask invisible positions and the vector padding, then max and exponentials
            // a vector at a time.
            for x in &mut si[valid..] {
                *x = f32::NEG_INFINITY;
            }
            let mut mx = isa.splat(f32::NEG_INFINITY);
            for c in (0..sp).step_by(w) {
                mx = isa.max(mx, isa.load(&si[c..c + w]));
            }
            let m_new = m[i].max(isa.reduce_max(mx));
            if m_new == f32::NEG_INFINITY {
                // Nothing visible yet for this row: p = 0 and corr = 1 leave acc as it is.
                si.fill(0.0);
                corr[i] = 1.0;
                continue;
            }
            // The vector exp (a libm call per row and tile showed up in profiles).
            corr[i] = isa.reduce_max(exp(isa, isa.splat(m[i] - m_new)));
            let mv = isa.splat(m_new);
            for c in (0..sp).step_by(w) {
                let x = isa.load(&si[c..c + w]);
                isa.store(&mut si[c..c + w], exp(isa, isa.sub(x, mv)));
            }
            // exp(-inf) is ~1e-38 here, not 0: clear the masked entries exactly.
            for x in &mut si[valid..] {
                *x = 0.0;
            }
            let mut total = isa.zero();
            for c in (0..sp).step_by(w) {
                total = isa.add(total, isa.load(&si[c..c + w]));
            }
            l[i] = l[i] * corr[i] + isa.reduce_add(total);
            m[i] = m_new;
        }
        by_rows!(
            rows,
            |r0| axpy::<L, T, D, 4>(isa, (acc, dp, r0), corr, (s, sp), vt, n, d),
            axpy::<L, T, D, 3>(isa, (acc, dp, r0), corr, (s, sp), vt, n, d),
            axpy::<L, T, D, 2>(isa, (acc, dp, r0), corr, (s, sp), vt, n, d),
            axpy::<L, T, D, 1>(isa, (acc, dp, r0), corr, (s, sp), vt, n, d)
        );
    }
    for i in 0..rows {
        let o = &mut out[i * (d + 2)..(i + 1) * (d + 2)];
        o[0] = m[i];
        o[1] = l[i];
        o[2..].copy_from_slice(&acc[i * dp..i * dp + d]);
    }
}
