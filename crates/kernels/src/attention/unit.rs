//! One unit of work (a sequence's KV head, a block of its query rows, a range of tiles) on
//! one instruction set: the choice between the two inner-loop shapes (`dot.rs`,
//! `rows.rs`), as the op the dispatch table runs (`cpu/entry.rs`).

use crate::attention::dot::run_dot;
use crate::attention::rows::run_rows;
use crate::attention::schedule::{use_dot, Unit};
use crate::attention::source::KvSource;
use crate::attention::tile::{RunCtx, Scratch};
use crate::cpu::entry::LanesOp;
use crate::cpu::lanes::Lanes;
use crate::store::dtype::KvElem;
use std::marker::PhantomData;

/// Runs one unit of a call: the op [`crate::cpu::entry::run_lanes`] enters.
pub(crate) struct UnitOp<'r, 'c, T, S> {
    ctx: &'r RunCtx<'c>,
    src: &'r S,
    unit: &'r Unit,
    scratch: &'r mut Scratch,
    out: &'r mut [f32],
    elem: PhantomData<T>,
}

impl<'r, 'c, T: KvElem, S: KvSource<T>> UnitOp<'r, 'c, T, S> {
    pub(crate) fn new(
        ctx: &'r RunCtx<'c>,
        src: &'r S,
        unit: &'r Unit,
        scratch: &'r mut Scratch,
        out: &'r mut [f32],
    ) -> Self {
        Self {
            ctx,
            src,
            unit,
            scratch,
            out,
            elem: PhantomData,
        }
    }
}

impl<T: KvElem, S: KvSource<T>> LanesOp for UnitOp<'_, '_, T, S> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(self, l: L) {
        run_unit::<L, T, S, KEYS>(l, self.ctx, self.src, self.unit, self.scratch, self.out);
    }
}

/// Runs one unit; `out` receives `rows x (2 + head_dim)` partial results.
#[inline(always)]
pub(crate) fn run_unit<L: Lanes, T: KvElem, S: KvSource<T>, const J: usize>(
    isa: L,
    ctx: &RunCtx<'_>,
    src: &S,
    unit: &Unit,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let seq = &ctx.seqs[unit.seq];
    if use_dot(seq.q_rows, ctx.group, L::W) {
        match ctx.head_dim {
            64 => run_dot::<L, T, S, 64>(isa, ctx, src, unit, scratch, out),
            128 => run_dot::<L, T, S, 128>(isa, ctx, src, unit, scratch, out),
            _ => run_dot::<L, T, S, 0>(isa, ctx, src, unit, scratch, out),
        }
    } else {
        // Common head sizes get compile-time strides (constant displacements, no bounds
        // checks in the inner loops); others take the same code with a runtime stride.
        match ctx.head_dim {
            64 => run_rows::<L, T, S, J, 64>(isa, ctx, src, unit, scratch, out),
            128 => run_rows::<L, T, S, J, 128>(isa, ctx, src, unit, scratch, out),
            _ => run_rows::<L, T, S, J, 0>(isa, ctx, src, unit, scratch, out),
        }
    }
}
