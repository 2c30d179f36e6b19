//! Random operations against the engine — add (with parallel sampling), step, abort, stop
//! a sequence, fail a step — under every KV policy and a budget tight enough to preempt,
//! with every invariant recounted after every operation, and what callers are told
//! checked against what they asked: every sequence ends exactly once, never with more
//! than `max_tokens` tokens, and when everything has ended no KV memory is held.

mod common;

use common::{config, Mock, VOCAB};
use pagedattn_engine::{
    ContiguousSizing, Engine, EngineError, FinishReason, KvPolicy, Request, RequestId,
    SamplingParams,
};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

const MAX_LEN: usize = 96;

#[derive(Clone, Debug)]
enum Op {
    /// A request: prompt length, max_tokens, n, a stop token, sampled or greedy.
    Add {
        prompt: usize,
        max_tokens: usize,
        n: usize,
        stop: Option<u32>,
        sample: bool,
    },
    Step,
    /// Abort the `i`-th request added (mod the number added).
    Abort(usize),
    /// Stop sequence `index` of the `i`-th request added.
    Stop(usize, usize),
    /// The next step's execution fails.
    FailNextStep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..48usize, 1..64usize, 1..4usize, prop::option::of(2..VOCAB as u32), any::<bool>())
            .prop_map(|(prompt, max_tokens, n, stop, sample)| Op::Add { prompt, max_tokens, n, stop, sample }),
        16 => Just(Op::Step),
        1 => any::<usize>().prop_map(Op::Abort),
        1 => (any::<usize>(), 0..4usize).prop_map(|(i, s)| Op::Stop(i, s)),
        1 => Just(Op::FailNextStep),
    ]
}

fn policy() -> impl Strategy<Value = KvPolicy> {
    prop::sample::select(vec![
        KvPolicy::Paged,
        KvPolicy::PagedPrefixCache,
        KvPolicy::Contiguous(ContiguousSizing::Max),
        KvPolicy::Contiguous(ContiguousSizing::Pow2),
        KvPolicy::Contiguous(ContiguousSizing::Oracle),
    ])
}

/// What the caller has been told about one sequence.
#[derive(Debug, Default)]
struct Heard {
    tokens: usize,
    finished: Option<FinishReason>,
}

struct Driver {
    engine: Engine<Mock>,
    /// Per request: its `n`, `max_tokens` and what was heard of each sequence.
    requests: Vec<(RequestId, usize, usize, Vec<Heard>)>,
    index: HashMap<RequestId, usize>,
}

impl Driver {
    fn hear(&mut self, outputs: Vec<pagedattn_engine::RequestOutput>) {
        for o in outputs {
            let r = self.index[&o.request];
            let (_, n, max_tokens, heard) = &mut self.requests[r];
            assert!(o.index < *n, "{o:?}");
            let h = &mut heard[o.index];
            assert!(h.finished.is_none(), "output after the end: {o:?}");
            h.tokens += o.new_tokens.len();
            assert!(h.tokens <= *max_tokens, "more than max_tokens: {o:?}");
            assert!(o.logprobs.is_empty());
            if let Some(reason) = o.finished {
                assert!(o.metrics.is_some(), "last output without metrics: {o:?}");
                h.finished = Some(reason);
            } else {
                assert!(o.metrics.is_none());
            }
        }
    }

    /// Every sequence of `id` still running ends now with an error (its step failed); at
    /// least one was.
    fn failed(&mut self, id: RequestId) {
        let r = self.index[&id];
        let mut live = 0;
        for h in self.requests[r]
            .3
            .iter_mut()
            .filter(|h| h.finished.is_none())
        {
            h.finished = Some(FinishReason::Error);
            live += 1;
        }
        assert!(live > 0, "request {id} failed after ending");
    }

    fn step(&mut self) {
        match self.engine.step() {
            Ok(outputs) => self.hear(outputs),
            Err(EngineError::StepFailed { requests, source }) => {
                assert_eq!(source.to_string(), "injected failure");
                for id in requests {
                    self.failed(id);
                }
            }
            Err(e) => panic!("step: {e}"),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Add {
                prompt,
                max_tokens,
                n,
                stop,
                sample,
            } => {
                let id = RequestId(self.requests.len() as u64);
                let tokens: Vec<u32> = (0..prompt)
                    .map(|j| (id.0 as u32 * 7 + j as u32 * 13) % (VOCAB as u32 - 2) + 2)
                    .collect();
                let params = SamplingParams {
                    max_tokens,
                    n,
                    stop_token_ids: stop.into_iter().collect(),
                    temperature: if sample { 0.8 } else { 0.0 },
                    seed: Some(id.0),
                    ..SamplingParams::default()
                };
                let req = Request::new(id.0, tokens, params);
                match self.engine.add_request(req) {
                    Ok(()) => {
                        let heard = (0..n).map(|_| Heard::default()).collect();
                        self.index.insert(id, self.requests.len());
                        self.requests.push((id, n, max_tokens, heard));
                    }
                    // Only a request longer than the engine allows is refused here.
                    Err(EngineError::TooLong { .. }) => assert!(prompt + max_tokens > MAX_LEN),
                    Err(e) => panic!("add: {e}"),
                }
            }
            Op::Step => self.step(),
            Op::Abort(i) if !self.requests.is_empty() => {
                let id = self.requests[i % self.requests.len()].0;
                let out = self.engine.abort(id).unwrap();
                assert!(out
                    .iter()
                    .all(|o| o.finished == Some(FinishReason::Aborted)));
                self.hear(out);
                assert!(!self.engine.contains(id));
            }
            Op::Stop(i, index) if !self.requests.is_empty() => {
                let id = self.requests[i % self.requests.len()].0;
                let out = self.engine.stop_sequence(id, index).unwrap();
                assert!(out.iter().all(|o| o.finished == Some(FinishReason::Stop)));
                self.hear(out);
            }
            Op::FailNextStep => self
                .engine
                .executor()
                .fail_next
                .store(true, Ordering::Relaxed),
            Op::Abort(_) | Op::Stop(..) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(
        policy in policy(),
        budget in 128u64..224,
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let engine = Engine::new(Mock::new(MAX_LEN), config(policy, budget, 8)).unwrap();
        let mut d = Driver { engine, requests: Vec::new(), index: HashMap::new() };
        for op in &ops {
            d.apply(op);
            if let Err(e) = d.engine.check_invariants() {
                panic!("{policy} after {op:?}: {e}");
            }
        }
        // Run everything to its end: it ends, and nothing is held afterwards.
        d.engine.executor().fail_next.store(false, Ordering::Relaxed);
        let mut steps = 0;
        while d.engine.has_unfinished() {
            d.step();
            d.engine.check_invariants().unwrap();
            steps += 1;
            prop_assert!(steps < 20_000, "{} did not finish", policy);
        }
        for (id, _, max_tokens, heard) in &d.requests {
            for (i, h) in heard.iter().enumerate() {
                prop_assert!(h.finished.is_some(), "request {} sequence {} never ended", id, i);
                // Requests fit the engine's length, so only max_tokens ends one by length.
                if h.finished == Some(FinishReason::Length) {
                    prop_assert_eq!(h.tokens, *max_tokens);
                }
            }
        }
        let usage = d.engine.kv_usage();
        prop_assert_eq!(usage.held_slots, 0, "{} leaked K/V", policy);
        prop_assert_eq!(usage.tokens_stored, 0);
        if let Some(b) = d.engine.block_manager_stats() {
            prop_assert_eq!(b.used_blocks, 0);
            prop_assert_eq!(b.free_blocks, b.total_blocks);
        }
        let t = d.engine.totals();
        prop_assert_eq!(t.finished_requests, d.requests.len() as u64);
    }
}
