//! The rows shape of the tile loop (prefill, or decode with many query heads per KV head):
//! vectors run across `W` query rows. `Q` is transposed once per group, a score tile
//! `S^T[j]` is `head_dim` FMAs of a broadcast key element against a `Q^T` vector, `J`
//! tokens at a time in registers; softmax is vectorised across rows; `P V` is broadcast-FMA
//! into `acc^T`. Every FMA needs about one load, which keeps the loop compute-bound.

use crate::dtype::KvElem;
use crate::isa::{exp, Lanes};
use crate::schedule::Unit;
use crate::source::KvSource;
use crate::tile::{fetch, reset, tiles_needed, RunCtx, Scratch};

/// `S^T[j0 + jj] = sum_dd K[j0 + jj][dd] * Q^T[dd]` for `J` tokens, accumulators in
/// registers; each FMA takes its key element as a broadcast straight from the tile. `D` is
/// the head dimension when known at compile time (0: use `d`), which turns the `J` row
/// offsets into constant displacements.
#[inline(always)]
fn scores<L: Lanes, const J: usize, const D: usize>(
    isa: L,
    qt: &[f32],
    k: &[f32],
    j0: usize,
    d: usize,
    s: &mut [f32],
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let kc = &k[j0 * d..(j0 + J) * d];
    let mut acc = [isa.zero(); J];
    for (dd, qc) in qt.chunks_exact(w).take(d).enumerate() {
        let qv = isa.load(qc);
        for jj in 0..J {
            acc[jj] = isa.fma(isa.splat(kc[jj * d + dd]), qv, acc[jj]);
        }
    }
    for jj in 0..J {
        isa.store(&mut s[(j0 + jj) * w..], acc[jj]);
    }
}

/// `acc^T[dd] = acc^T[dd] * corr + sum_jj V[j0 + jj][dd] * P^T[j0 + jj]` for `J` tokens.
/// Four accumulator chains per element keep the FMA dependency chains short.
#[inline(always)]
fn accumulate<L: Lanes, const J: usize, const D: usize>(
    isa: L,
    acct: &mut [f32],
    p: &[f32],
    v: &[f32],
    (j0, d): (usize, usize),
    corr: Option<L::V>,
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let vc = &v[j0 * d..(j0 + J) * d];
    let mut pv = [isa.zero(); J];
    for jj in 0..J {
        pv[jj] = isa.load(&p[(j0 + jj) * w..]);
    }
    for (dd, ac) in acct.chunks_exact_mut(w).take(d).enumerate() {
        let mut a = [isa.zero(); 4];
        a[0] = isa.load(ac);
        if let Some(c) = corr {
            a[0] = isa.mul(a[0], c);
        }
        for jj in 0..J {
            a[jj % 4] = isa.fma(isa.splat(vc[jj * d + dd]), pv[jj], a[jj % 4]);
        }
        let sum = if J >= 4 {
            isa.add(isa.add(a[0], a[1]), isa.add(a[2], a[3]))
        } else {
            a[0]
        };
        isa.store(ac, sum);
    }
}

/// Running state of one group of `W` rows: max, sum, causal limit (one vector each).
const STATE: usize = 3;

/// One tile for one group of `W` rows: scores, online softmax across rows, `P V`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn group_tile<L: Lanes, const J: usize, const D: usize>(
    isa: L,
    qt: &[f32],
    acct: &mut [f32],
    state: &mut [f32],
    (k, v): (&[f32], &[f32]),
    s: &mut [f32],
    n: usize,
    pos0: usize,
    d: usize,
) {
    let w = L::W;
    let sw = w.max(16);
    let neg_inf = isa.splat(f32::NEG_INFINITY);
    let mv = isa.load(&state[..]);
    let lv = isa.load(&state[sw..]);
    let limv = isa.load(&state[2 * sw..]);
    let mut j0 = 0;
    while j0 + J <= n {
        scores::<L, J, D>(isa, qt, k, j0, d, s);
        j0 += J;
    }
    while j0 < n {
        scores::<L, 1, D>(isa, qt, k, j0, d, s);
        j0 += 1;
    }
    // Online softmax, vectorised across rows; invisible positions get p = 0.
    let mut tile_max = neg_inf;
    for j in 0..n {
        let visible = isa.lt(isa.splat((pos0 + j) as f32), limv);
        tile_max = isa.max(
            tile_max,
            isa.select(visible, isa.load(&s[j * w..]), neg_inf),
        );
    }
    let m_new = isa.max(mv, tile_max);
    // Rows that have seen nothing yet keep m = -inf; subtracting 0 keeps them NaN-free.
    let m_use = isa.select(isa.lt(m_new, isa.splat(f32::MIN)), isa.zero(), m_new);
    let corr = exp(isa, isa.sub(mv, m_use));
    let mut lsum = isa.zero();
    for j in 0..n {
        let visible = isa.lt(isa.splat((pos0 + j) as f32), limv);
        let e = exp(isa, isa.sub(isa.load(&s[j * w..]), m_use));
        let p = isa.select(visible, e, isa.zero());
        isa.store(&mut s[j * w..], p);
        lsum = isa.add(lsum, p);
    }
    isa.store(&mut state[..], m_new);
    isa.store(&mut state[sw..], isa.fma(lv, corr, lsum));
    let mut j0 = 0;
    while j0 + J <= n {
        accumulate::<L, J, D>(isa, acct, s, v, (j0, d), (j0 == 0).then_some(corr));
        j0 += J;
    }
    while j0 < n {
        accumulate::<L, 1, D>(isa, acct, s, v, (j0, d), (j0 == 0).then_some(corr));
        j0 += 1;
    }
}

/// The rows shape: `W` query rows per vector, all groups of the unit advanced tile by
/// tile so each tile is loaded (and widened) once for the whole unit, then stays in L1.
#[inline(always)]
pub(crate) fn run_rows<L: Lanes, T: KvElem, S: KvSource<T>, const J: usize, const D: usize>(
    isa: L,
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let (w, d, bs) = (L::W, ctx.head_dim, ctx.tile_size);
    let sw = w.max(16);
    let seq = &ctx.seqs[unit.seq];
    let rows = unit.row_end - unit.row_begin;
    let groups = rows.div_ceil(w);
    let Scratch {
        q: qt,
        acc: acct,
        s,
        kv,
        m: state,
        lim: ends,
        ..
    } = scratch;
    reset(qt, groups * d * w, 0.0);
    reset(acct, groups * d * w, 0.0);
    reset(s, bs * w, 0.0);
    reset(state, groups * STATE * sw, 0.0);
    ends.clear();
    for g in 0..groups {
        let st = &mut state[g * STATE * sw..(g + 1) * STATE * sw];
        st[..sw].fill(f32::NEG_INFINITY);
        let mut max_limit = 0;
        let lanes = w.min(rows - g * w);
        let qrows: Vec<Option<&[f32]>> = (0..lanes)
            .map(|lane| ctx.query_row(seq, unit.kv_head, unit.row_begin + g * w + lane))
            .collect();
        // Transpose with contiguous writes (strided writes vectorise into slow scatters).
        for (dd, qc) in qt[g * d * w..(g + 1) * d * w]
            .chunks_exact_mut(w)
            .enumerate()
        {
            for (x, qr) in qc.iter_mut().zip(&qrows) {
                *x = qr.map_or(0.0, |q| q[dd] * ctx.scale);
            }
        }
        for lane in 0..lanes {
            let limit = ctx.limit(seq, unit.row_begin + g * w + lane);
            st[2 * sw + lane] = limit as f32;
            max_limit = max_limit.max(limit);
        }
        ends.push(tiles_needed(seq, unit, bs, max_limit));
    }
    let end = ends.iter().copied().max().unwrap_or(unit.tile_begin);
    for tile in unit.tile_begin..end {
        let pos0 = tile * bs;
        let (kf, vf, n) = fetch(isa, src, seq, unit, tile, end, bs, kv);
        for (g, &g_end) in ends.iter().enumerate() {
            if tile >= g_end {
                continue;
            }
            group_tile::<L, J, D>(
                isa,
                &qt[g * d * w..(g + 1) * d * w],
                &mut acct[g * d * w..(g + 1) * d * w],
                &mut state[g * STATE * sw..(g + 1) * STATE * sw],
                (kf, vf),
                s,
                n,
                pos0,
                d,
            );
        }
    }
    for g in 0..groups {
        let st = &state[g * STATE * sw..(g + 1) * STATE * sw];
        let ag = &acct[g * d * w..(g + 1) * d * w];
        for lane in 0..w.min(rows - g * w) {
            let i = g * w + lane;
            let o = &mut out[i * (d + 2)..(i + 1) * (d + 2)];
            o[0] = st[lane];
            o[1] = st[sw + lane];
            for (dd, x) in o[2..].iter_mut().enumerate() {
                *x = ag[dd * w + lane];
            }
        }
    }
}
