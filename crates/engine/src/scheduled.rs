//! What the scheduler hands the engine: a step as decided ([`Scheduled`]), what applying
//! its result did ([`StepUpdate`]), a sequence retired ([`Retired`]), and the progress
//! counters ([`Progress`]).

use crate::ids::{RequestId, SeqId};
use crate::output::RequestOutput;
use pagedattn_kernels::SeqSpec;
use pagedattn_kv::BlockCopy;

/// A step as the scheduler decided it. Each chunk is a sequence's share of the step in the
/// one spelling every layer uses ([`SeqSpec`]): its rows of the batch (`query_start`,
/// `query_len` new tokens) and its context after them; `kv` names the sequence, whose K/V
/// location the batch resolves. A chunk samples when its context reaches the sequence's
/// last token.
#[derive(Debug, Default)]
pub(crate) struct Scheduled {
    pub(crate) chunks: Vec<SeqSpec<SeqId>>,
    /// Copy-on-write copies to perform before the step.
    pub(crate) copies: Vec<BlockCopy>,
    /// Preemptions made to fit the step.
    pub(crate) preempted: usize,
    /// Chunks that decode one token.
    pub(crate) decode_seqs: usize,
}

impl Scheduled {
    /// Appends `len` new tokens of `seq` from position `start`, as the next rows.
    pub(crate) fn push(&mut self, seq: SeqId, start: usize, len: usize) {
        let query_start = self
            .chunks
            .last()
            .map_or(0, |c| c.query_start + c.query_len);
        self.chunks.push(SeqSpec {
            query_start,
            query_len: len,
            context_len: start + len,
            kv: seq,
        });
    }

    /// Tokens computed in the step.
    pub(crate) fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.query_len).sum()
    }
}

/// What [`Scheduler::update`] did, for the request bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct StepUpdate {
    /// Each sequence's new output, in batch order (forks right before their parent); those
    /// with `finished` set are retired and carry their metrics.
    pub(crate) outputs: Vec<(SeqId, RequestOutput)>,
    /// Forks made this step, with their request.
    pub(crate) born: Vec<(RequestId, SeqId)>,
}

/// A sequence retired by [`Scheduler::retire`].
#[derive(Debug)]
pub(crate) struct Retired {
    /// Its last output: `finished` and `metrics` set, no new tokens.
    pub(crate) output: RequestOutput,
    /// Forks it was still to make (they never will be).
    pub(crate) unborn_forks: usize,
}

/// Progress counters over the scheduler's life.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    pub(crate) computed_tokens: u64,
    pub(crate) recomputed_tokens: u64,
    pub(crate) preemptions: u64,
    pub(crate) output_tokens: u64,
}
