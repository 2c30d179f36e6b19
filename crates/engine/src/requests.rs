//! Request bookkeeping: which requests are live and which of their sequences, what
//! finished (history, when kept), and the request-level totals. One type, one writer: the
//! engine calls these methods with what the scheduler reports, and nothing else changes
//! them.
//!
//! # Invariants (recounted by [`Requests::check`])
//! - `live` is keyed by the requests with at least one live sequence; a request leaves it
//!   when its last sequence is retired (finished, aborted or failed).
//! - Every listed sequence is live in the scheduler and belongs to the request listing it,
//!   and every live sequence is listed.
//! - With history off, nothing here grows with the number of requests served.

use crate::ids::{RequestId, SeqId};
use crate::metrics::SeqMetrics;
use crate::output::RequestOutput;
use crate::scheduled::{Retired, StepUpdate};
use crate::scheduler::Scheduler;
use std::collections::HashMap;

/// The engine's requests.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// Live requests and their live sequences.
    live: HashMap<RequestId, Vec<SeqId>>,
    /// Metrics of every finished sequence, in finishing order (with history only).
    history: Option<Vec<SeqMetrics>>,
    /// Prompt tokens of the requests accepted.
    prompt_tokens: u64,
    /// Requests that ended (finished, aborted or failed).
    ended: u64,
}

impl Requests {
    /// Bookkeeping that keeps every finished sequence's metrics when `keep_history`.
    pub(crate) fn new(keep_history: bool) -> Self {
        Self {
            history: keep_history.then(Vec::new),
            ..Self::default()
        }
    }

    /// Records a request just queued with sequences `seqs`.
    pub(crate) fn add(&mut self, id: RequestId, seqs: Vec<SeqId>, prompt_len: usize) {
        self.prompt_tokens += prompt_len as u64;
        self.live.insert(id, seqs);
    }

    /// Whether `id` is live.
    pub(crate) fn contains(&self, id: RequestId) -> bool {
        self.live.contains_key(&id)
    }

    /// Whether any request is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live sequences of `id` (empty if it is not live).
    pub(crate) fn seqs(&self, id: RequestId) -> Vec<SeqId> {
        self.live.get(&id).cloned().unwrap_or_default()
    }

    /// The live requests.
    pub(crate) fn ids(&self) -> Vec<RequestId> {
        self.live.keys().copied().collect()
    }

    /// Takes in a step's update: adds its forks, and retires what finished. Returns the
    /// outputs for the caller, in order.
    pub(crate) fn record(&mut self, update: StepUpdate) -> Vec<RequestOutput> {
        for (request, id) in update.born {
            self.live.entry(request).or_default().push(id);
        }
        update
            .outputs
            .into_iter()
            .map(|(id, out)| {
                if out.finished.is_some() {
                    self.remove(out.request, id, out.metrics.as_deref());
                }
                out
            })
            .collect()
    }

    /// Takes in sequence `id`, retired by the caller's word (abort, stop, failed step).
    /// Returns its last output and, for the forks it never made, theirs (so a caller hears
    /// of all `n` sequences of a request).
    pub(crate) fn retired(&mut self, id: SeqId, retired: Retired) -> Vec<RequestOutput> {
        let Retired {
            output,
            unborn_forks,
        } = retired;
        let metrics = output.metrics.as_deref().cloned().unwrap_or_default();
        self.remove(output.request, id, Some(&metrics));
        let unborn = (1..=unborn_forks).map(|index| {
            let m = SeqMetrics {
                index,
                ..metrics.clone()
            };
            if let Some(h) = &mut self.history {
                h.push(m.clone());
            }
            RequestOutput {
                index,
                metrics: Some(Box::new(m)),
                ..output.clone()
            }
        });
        let unborn: Vec<_> = unborn.collect();
        std::iter::once(output).chain(unborn).collect()
    }

    /// Removes finished sequence `id` of `request`; the request ends with its last one.
    fn remove(&mut self, request: RequestId, id: SeqId, metrics: Option<&SeqMetrics>) {
        if let (Some(h), Some(m)) = (&mut self.history, metrics) {
            h.push(m.clone());
        }
        if let Some(seqs) = self.live.get_mut(&request) {
            seqs.retain(|&s| s != id);
            if seqs.is_empty() {
                self.live.remove(&request);
                self.ended += 1;
            }
        }
    }

    /// Metrics of finished sequences, in finishing order (with history only).
    pub(crate) fn history(&self) -> &[SeqMetrics] {
        self.history.as_deref().unwrap_or_default()
    }

    /// Prompt tokens of the requests accepted.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Requests that ended.
    pub(crate) fn finished_requests(&self) -> u64 {
        self.ended
    }

    /// Recounts the invariants written at the top of this module against `sched`.
    pub(crate) fn check(&self, sched: &Scheduler) -> Result<(), String> {
        let mut listed = 0;
        for (id, seqs) in &self.live {
            if seqs.is_empty() {
                return Err(format!("request {id} has nothing left but is kept"));
            }
            for &sid in seqs {
                let s = sched
                    .seq(sid)
                    .map_err(|_| format!("request {id} lists {sid}, which is not live"))?;
                if s.request() != *id {
                    return Err(format!("{sid} belongs to {}, listed by {id}", s.request()));
                }
                listed += 1;
            }
        }
        let live = sched.live().count();
        if listed != live {
            return Err(format!("{listed} sequences in requests, {live} live"));
        }
        Ok(())
    }
}
