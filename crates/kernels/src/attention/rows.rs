//! The rows shape of the tile loop (prefill, or decode with many query heads per KV head):
//! vectors run across `W` query rows. `Q` is transposed once per group, a score tile
//! `S^T[j]` is `head_dim` FMAs of a broadcast key element against a `Q^T` vector, `J`
//! tokens at a time in registers; softmax is vectorised across rows; `P V` is broadcast-FMA
//! into `acc^T`. Every FMA needs about one load, which keeps the loop compute-bound.

use crate::attention::schedule::Unit;
use crate::attention::source::KvSource;
use crate::attention::tile::{fetch, reset, tiles_needed, RunCtx, Scratch};
use crate::cpu::lanes::{exp, Lanes};
use crate::store::dtype::KvElem;

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

/// Online softmax of one group's score tile `s`, vectorised across rows; invisible
/// positions get p = 0. Updates the group's max and sum in `state` and returns the factor
/// that rescales its accumulator.
#[inline(always)]
fn softmax_tile<L: Lanes>(
    isa: L,
    state: &mut [f32],
    s: &mut [f32],
    n: usize,
    (pos0, open): (usize, usize),
) -> L::V {
    if pos0 + n <= open {
        softmax_masked::<L, false>(isa, state, s, n, pos0)
    } else {
        softmax_masked::<L, true>(isa, state, s, n, pos0)
    }
}

/// [`softmax_tile`] with (`MASK`) or without the per-position visibility test.
#[inline(always)]
fn softmax_masked<L: Lanes, const MASK: bool>(
    isa: L,
    state: &mut [f32],
    s: &mut [f32],
    n: usize,
    pos0: usize,
) -> L::V {
    let w = L::W;
    let sw = w.max(16);
    let neg_inf = isa.splat(f32::NEG_INFINITY);
    let mv = isa.load(&state[..]);
    let lv = isa.load(&state[sw..]);
    let limv = isa.load(&state[2 * sw..]);
    let mut tile_max = neg_inf;
    for j in 0..n {
        let sj = isa.load(&s[j * w..]);
        tile_max = if MASK {
            let visible = isa.lt(isa.splat((pos0 + j) as f32), limv);
            isa.max(tile_max, isa.select(visible, sj, neg_inf))
        } else {
            isa.max(tile_max, sj)
        };
    }
    let m_new = isa.max(mv, tile_max);
    // Rows that have seen nothing yet keep m = -inf; subtracting 0 keeps them NaN-free.
    let m_use = isa.select(isa.lt(m_new, isa.splat(f32::MIN)), isa.zero(), m_new);
    let corr = exp(isa, isa.sub(mv, m_use));
    let mut lsum = isa.zero();
    for j in 0..n {
        let e = exp(isa, isa.sub(isa.load(&s[j * w..]), m_use));
        let p = if MASK {
            let visible = isa.lt(isa.splat((pos0 + j) as f32), limv);
            isa.select(visible, e, isa.zero())
        } else {
            e
        };
        isa.store(&mut s[j * w..], p);
        lsum = isa.add(lsum, p);
    }
    isa.store(&mut state[..], m_new);
    isa.store(&mut state[sw..], isa.fma(lv, corr, lsum));
    corr
}

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
    pos: (usize, usize),
    d: usize,
) {
    let mut j0 = 0;
    while j0 + J <= n {
        scores::<L, J, D>(isa, qt, k, j0, d, s);
        j0 += J;
    }
    while j0 < n {
        scores::<L, 1, D>(isa, qt, k, j0, d, s);
        j0 += 1;
    }
    let corr = softmax_tile(isa, state, s, n, pos);
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

/// Scores of `J` tokens for two groups at once: each broadcast key element feeds two
/// FMAs, so a pass needs `2 + J` loads per `2 J` FMAs (one group needs `1 + J` per `J`).
#[inline(always)]
fn scores_pair<L: Lanes, const J: usize, const D: usize>(
    isa: L,
    (q0, q1): (&[f32], &[f32]),
    k: &[f32],
    j0: usize,
    d: usize,
    (s0, s1): (&mut [f32], &mut [f32]),
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let kc = &k[j0 * d..(j0 + J) * d];
    let mut a0 = [isa.zero(); J];
    let mut a1 = [isa.zero(); J];
    for (dd, (c0, c1)) in q0
        .chunks_exact(w)
        .zip(q1.chunks_exact(w))
        .take(d)
        .enumerate()
    {
        let (x0, x1) = (isa.load(c0), isa.load(c1));
        for jj in 0..J {
            let kb = isa.splat(kc[jj * d + dd]);
            a0[jj] = isa.fma(kb, x0, a0[jj]);
            a1[jj] = isa.fma(kb, x1, a1[jj]);
        }
    }
    for jj in 0..J {
        isa.store(&mut s0[(j0 + jj) * w..], a0[jj]);
        isa.store(&mut s1[(j0 + jj) * w..], a1[jj]);
    }
}

/// `acc^T[dd0 .. dd0 + C]` of two groups, rescaled by their `corr` and advanced by all `n`
/// tokens of the tile: the `2 C` accumulators stay in registers across the tokens, and
/// each broadcast value element feeds two FMAs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate_pair<L: Lanes, const C: usize, const D: usize>(
    isa: L,
    (acc0, acc1): (&mut [f32], &mut [f32]),
    (p0, p1): (&[f32], &[f32]),
    v: &[f32],
    n: usize,
    dd0: usize,
    d: usize,
    (c0, c1): (L::V, L::V),
) {
    let w = L::W;
    let d = if D > 0 { D } else { d };
    let mut a0 = [isa.zero(); C];
    let mut a1 = [isa.zero(); C];
    for c in 0..C {
        a0[c] = isa.mul(isa.load(&acc0[(dd0 + c) * w..]), c0);
        a1[c] = isa.mul(isa.load(&acc1[(dd0 + c) * w..]), c1);
    }
    let rows = p0
        .chunks_exact(w)
        .zip(p1.chunks_exact(w))
        .zip(v.chunks_exact(d));
    for ((r0, r1), vrow) in rows.take(n) {
        let (x0, x1) = (isa.load(r0), isa.load(r1));
        let vr = &vrow[dd0..dd0 + C];
        for c in 0..C {
            let vb = isa.splat(vr[c]);
            a0[c] = isa.fma(vb, x0, a0[c]);
            a1[c] = isa.fma(vb, x1, a1[c]);
        }
    }
    for c in 0..C {
        isa.store(&mut acc0[(dd0 + c) * w..], a0[c]);
        isa.store(&mut acc1[(dd0 + c) * w..], a1[c]);
    }
}

/// One tile for two neighbouring groups (`2 W` rows): the paired score and `P V` loops
/// around each group's own softmax. `s` holds two score tiles of `bs` tokens.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pair_tile<L: Lanes, const D: usize>(
    isa: L,
    qt: (&[f32], &[f32]),
    acct: (&mut [f32], &mut [f32]),
    (state0, state1): (&mut [f32], &mut [f32]),
    (k, v): (&[f32], &[f32]),
    s: &mut [f32],
    (n, bs): (usize, usize),
    (pos0, open0, open1): (usize, usize, usize),
    d: usize,
) {
    const J: usize = 8;
    const C: usize = 8;
    let (s0, s1) = s[..2 * bs * L::W].split_at_mut(bs * L::W);
    let mut j0 = 0;
    while j0 + J <= n {
        scores_pair::<L, J, D>(isa, qt, k, j0, d, (&mut *s0, &mut *s1));
        j0 += J;
    }
    while j0 < n {
        scores_pair::<L, 1, D>(isa, qt, k, j0, d, (&mut *s0, &mut *s1));
        j0 += 1;
    }
    let corr = (
        softmax_tile(isa, state0, s0, n, (pos0, open0)),
        softmax_tile(isa, state1, s1, n, (pos0, open1)),
    );
    let d_rt = if D > 0 { D } else { d };
    let (a0, a1) = acct;
    let mut dd = 0;
    while dd + C <= d_rt {
        accumulate_pair::<L, C, D>(isa, (&mut *a0, &mut *a1), (s0, s1), v, n, dd, d, corr);
        dd += C;
    }
    while dd < d_rt {
        accumulate_pair::<L, 1, D>(isa, (&mut *a0, &mut *a1), (s0, s1), v, n, dd, d, corr);
        dd += 1;
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
        min_lim,
        ..
    } = scratch;
    reset(qt, groups * d * w, 0.0);
    reset(acct, groups * d * w, 0.0);
    reset(s, if L::PAIR_GROUPS { 2 } else { 1 } * bs * w, 0.0);
    reset(state, groups * STATE * sw, 0.0);
    ends.clear();
    min_lim.clear();
    for g in 0..groups {
        let st = &mut state[g * STATE * sw..(g + 1) * STATE * sw];
        st[..sw].fill(f32::NEG_INFINITY);
        let (mut max_limit, mut min_limit) = (0, usize::MAX);
        let lanes = w.min(rows - g * w);
        let starts: Vec<Option<usize>> = (0..lanes)
            .map(|lane| ctx.query_row_start(seq, unit.kv_head, unit.row_begin + g * w + lane))
            .collect();
        isa.transpose_rows(
            ctx.q,
            &starts,
            d,
            ctx.scale,
            &mut qt[g * d * w..(g + 1) * d * w],
        );
        for lane in 0..lanes {
            let limit = ctx.limit(seq, unit.row_begin + g * w + lane);
            st[2 * sw + lane] = limit as f32;
            max_limit = max_limit.max(limit);
            min_limit = min_limit.min(limit);
        }
        ends.push(tiles_needed(seq, unit, bs, max_limit));
        min_lim.push(min_limit);
    }
    let end = ends.iter().copied().max().unwrap_or(unit.tile_begin);
    for tile in unit.tile_begin..end {
        let pos0 = tile * bs;
        let (kf, vf, n) = fetch(isa, src, seq, unit, tile, end, bs, kv);
        // Groups are visited in pairs where the ISA has the registers for it (the pairing
        // depends on the rows' limits only, never on addressing).
        let mut g = 0;
        while g < groups {
            if tile >= ends[g] {
                g += 1;
                continue;
            }
            if L::PAIR_GROUPS && g + 1 < groups && tile < ends[g + 1] {
                let (qa, qb) = qt[g * d * w..(g + 2) * d * w].split_at(d * w);
                let (aa, ab) = acct[g * d * w..(g + 2) * d * w].split_at_mut(d * w);
                let (sa, sb) = state[g * STATE * sw..(g + 2) * STATE * sw].split_at_mut(STATE * sw);
                pair_tile::<L, D>(
                    isa,
                    (qa, qb),
                    (aa, ab),
                    (sa, sb),
                    (kf, vf),
                    s,
                    (n, bs),
                    (pos0, min_lim[g], min_lim[g + 1]),
                    d,
                );
                g += 2;
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
                (pos0, min_lim[g]),
                d,
            );
            g += 1;
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
