//! The dot shape of the tile loop (decode with few query heads per KV head): vectors run
//! along `head_dim`, a score is a dot product and `p V` an axpy, with K/V read and widened
//! straight from the tile. Nothing is wasted when a KV head has a single query row.

use crate::dtype::{DType, KvElem};
use crate::isa::{exp, Lanes};
use crate::schedule::Unit;
use crate::source::KvSource;
use crate::tile::{reset, tiles_needed, RunCtx, Scratch};

/// `W` elements of a storage slice as f32 (widened in registers for f16/bf16).
#[inline(always)]
fn load_t<L: Lanes, T: KvElem>(isa: L, s: &[T]) -> L::V {
    if let Some(f) = T::as_f32(s) {
        isa.load(f)
    } else if let Some(bits) = T::as_bits(s) {
        if T::DTYPE == DType::Bf16 {
            isa.load_bf16(bits)
        } else {
            isa.load_f16(bits)
        }
    } else {
        isa.zero()
    }
}

/// `q . k` along `head_dim` (`D` as in `rows::scores`); four chains hide FMA latency.
#[inline(always)]
fn dot<L: Lanes, T: KvElem, const D: usize>(isa: L, q: &[f32], k: &[T], d: usize) -> f32 {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let full = d / w;
    let (q, k) = (&q[..d], &k[..d]);
    let (mut a0, mut a1, mut a2, mut a3) = (isa.zero(), isa.zero(), isa.zero(), isa.zero());
    let qv = |c: usize| isa.load(&q[c * w..c * w + w]);
    let kv = |c: usize| load_t(isa, &k[c * w..c * w + w]);
    let mut c = 0;
    while c + 4 <= full {
        a0 = isa.fma(qv(c), kv(c), a0);
        a1 = isa.fma(qv(c + 1), kv(c + 1), a1);
        a2 = isa.fma(qv(c + 2), kv(c + 2), a2);
        a3 = isa.fma(qv(c + 3), kv(c + 3), a3);
        c += 4;
    }
    while c < full {
        a0 = isa.fma(qv(c), kv(c), a0);
        c += 1;
    }
    let a = [a0, a1, a2, a3];
    let mut s = isa.reduce_add(isa.add(isa.add(a[0], a[1]), isa.add(a[2], a[3])));
    for dd in full * w..d {
        s += q[dd] * k[dd].to_f32();
    }
    s
}

/// `acc = acc * corr + sum_j p[j] * v[j]` along `head_dim`.
#[inline(always)]
fn axpy_rows<L: Lanes, T: KvElem, const D: usize>(
    isa: L,
    acc: &mut [f32],
    corr: f32,
    p: &[f32],
    v: &[T],
    d: usize,
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let full = d / w;
    let cv = isa.splat(corr);
    let v = &v[..p.len() * d];
    for c in 0..full {
        let vv = |j: usize| load_t(isa, &v[j * d + c * w..j * d + c * w + w]);
        let mut a0 = isa.mul(isa.load(&acc[c * w..c * w + w]), cv);
        let (mut a1, mut a2, mut a3) = (isa.zero(), isa.zero(), isa.zero());
        let mut j = 0;
        while j + 4 <= p.len() {
            a0 = isa.fma(isa.splat(p[j]), vv(j), a0);
            a1 = isa.fma(isa.splat(p[j + 1]), vv(j + 1), a1);
            a2 = isa.fma(isa.splat(p[j + 2]), vv(j + 2), a2);
            a3 = isa.fma(isa.splat(p[j + 3]), vv(j + 3), a3);
            j += 4;
        }
        while j < p.len() {
            a0 = isa.fma(isa.splat(p[j]), vv(j), a0);
            j += 1;
        }
        let a = [a0, a1, a2, a3];
        let sum = isa.add(isa.add(a[0], a[1]), isa.add(a[2], a[3]));
        isa.store(&mut acc[c * w..c * w + w], sum);
    }
    for dd in full * w..d {
        let mut a = acc[dd] * corr;
        for (j, &pj) in p.iter().enumerate() {
            a += pj * v[j * d + dd].to_f32();
        }
        acc[dd] = a;
    }
}

/// Prefetches part `part` of `parts` of `s`: spreading the next tile's prefetches over
/// the current tile's tokens keeps a steady number of misses in flight instead of
/// flooding the fill buffers at once.
#[inline(always)]
fn prefetch_part<L: Lanes, T>(isa: L, s: &[T], part: usize, parts: usize) {
    let per = s.len().div_ceil(parts.max(1));
    let begin = (part * per).min(s.len());
    isa.prefetch(&s[begin..(begin + per).min(s.len())]);
}

/// How many tiles ahead the dot shape prefetches.
const PREFETCH_TILES: usize = 2;

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
        ..
    } = scratch;
    reset(q, rows * dp, 0.0);
    reset(acc, rows * dp, 0.0);
    reset(s, bs.div_ceil(w) * w, 0.0);
    reset(m, rows, f32::NEG_INFINITY);
    reset(l, rows, 0.0);
    lim.clear();
    for i in 0..rows {
        let r = unit.row_begin + i;
        if let Some(qr) = ctx.query_row(seq, unit.kv_head, r) {
            for (dst, &x) in q[i * dp..i * dp + d].iter_mut().zip(qr) {
                *dst = x * ctx.scale;
            }
        }
        lim.push(ctx.limit(seq, r));
    }
    let end = tiles_needed(seq, unit, bs, lim.iter().copied().max().unwrap_or(0));
    for tile in unit.tile_begin..end {
        let pos0 = tile * bs;
        let n = bs.min(seq.read_len - pos0);
        let (kt, vt) = src.tile(unit.seq, unit.kv_head, tile, n);
        // Two tiles ahead: one tile of compute is shorter than a DRAM round trip plus the
        // time the prefetches wait for fill buffers.
        let next = (tile + PREFETCH_TILES < end).then(|| {
            let at = (tile + PREFETCH_TILES) * bs;
            src.tile(
                unit.seq,
                unit.kv_head,
                tile + PREFETCH_TILES,
                bs.min(seq.read_len - at),
            )
        });
        for i in 0..rows {
            let valid = lim[i].saturating_sub(pos0).min(n);
            let qr = &q[i * dp..(i + 1) * dp];
            for j in 0..n {
                s[j] = dot::<L, T, D>(isa, qr, &kt[j * d..(j + 1) * d], d);
                if let (0, Some((k2, v2))) = (i, next) {
                    prefetch_part(isa, k2, j, n);
                    prefetch_part(isa, v2, j, n);
                }
            }
            // Mask invisible positions and the vector padding, then max and exponentials
            // a vector at a time.
            let sp = s.len();
            for x in &mut s[valid..sp] {
                *x = f32::NEG_INFINITY;
            }
            let mut mx = isa.splat(f32::NEG_INFINITY);
            for c in (0..sp).step_by(w) {
                mx = isa.max(mx, isa.load(&s[c..c + w]));
            }
            let m_new = m[i].max(isa.reduce_max(mx));
            if m_new == f32::NEG_INFINITY {
                continue; // nothing visible yet for this row
            }
            let corr = (m[i] - m_new).exp();
            let mv = isa.splat(m_new);
            for c in (0..sp).step_by(w) {
                let x = isa.load(&s[c..c + w]);
                isa.store(&mut s[c..c + w], exp(isa, isa.sub(x, mv)));
            }
            // exp(-inf) is ~1e-38 here, not 0: clear the masked entries exactly.
            for x in &mut s[valid..sp] {
                *x = 0.0;
            }
            let mut total = isa.zero();
            for c in (0..sp).step_by(w) {
                total = isa.add(total, isa.load(&s[c..c + w]));
            }
            let psum = isa.reduce_add(total);
            l[i] = l[i] * corr + psum;
            m[i] = m_new;
            axpy_rows::<L, T, D>(isa, &mut acc[i * dp..(i + 1) * dp], corr, &s[..n], vt, d);
        }
    }
    for i in 0..rows {
        let o = &mut out[i * (d + 2)..(i + 1) * (d + 2)];
        o[0] = m[i];
        o[1] = l[i];
        o[2..].copy_from_slice(&acc[i * dp..i * dp + d]);
    }
}
