//! Engine behaviour with a mock executor that verifies KV addressing (see `common`).

mod common;

use common::{config, Mock, VOCAB};
use pagedattn_engine::{
    ContiguousSizing, Engine, EngineError, FinishReason, KvPolicy, Request, RequestId,
    SamplingParams, SeqState,
};

const MAX_LEN: usize = 256;

fn prompts(n: usize, seed: u32) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let len = 3 + (i * 37 + seed as usize * 11) % 90;
            (0..len)
                .map(|j| ((i as u32 * 7 + j as u32 * 13 + seed) % 60) + 2)
                .collect()
        })
        .collect()
}

fn params(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    }
}

fn run(
    policy: KvPolicy,
    tokens: u64,
    block_size: usize,
    ps: &[Vec<u32>],
    max_tokens: usize,
) -> (Vec<Vec<u32>>, Engine<Mock>) {
    let mut e = Engine::new(Mock::new(MAX_LEN), config(policy, tokens, block_size)).unwrap();
    let out = e.generate(ps, &params(max_tokens)).unwrap();
    e.check_invariants().unwrap();
    assert!(!e.has_unfinished());
    assert_eq!(e.kv_usage().held_slots, 0, "KV leaked");
    (out.into_iter().map(|mut v| v.remove(0)).collect(), e)
}

fn alone(ps: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    ps.iter()
        .map(|p| {
            run(
                KvPolicy::Paged,
                4096,
                16,
                std::slice::from_ref(p),
                max_tokens,
            )
            .0
            .remove(0)
        })
        .collect()
}

#[test]
fn batched_outputs_equal_outputs_alone_under_every_policy() {
    let ps = prompts(12, 1);
    let expect = alone(&ps, 20);
    for policy in KvPolicy::ALL {
        let (got, e) = run(policy, 4096, 16, &ps, 20);
        assert_eq!(got, expect, "{policy}");
        assert!(e.executor().max_batch > 1, "{policy} never batched");
    }
}

#[test]
fn preemption_keeps_outputs_and_terminates() {
    let ps = prompts(16, 2);
    let expect = alone(&ps, 60);
    // 320 slots: a few sequences at a time, growth forces preemption.
    for policy in [KvPolicy::Paged, KvPolicy::PagedPrefixCache] {
        let (got, e) = run(policy, 320, 8, &ps, 60);
        assert_eq!(got, expect, "{policy}");
        assert!(
            e.totals().preemptions > 0,
            "{policy}: the pool was meant to be tight"
        );
        assert!(
            e.totals().steps < 5_000,
            "{policy}: {} steps",
            e.totals().steps
        );
    }
}

#[test]
fn a_burst_at_a_tight_budget_does_not_storm() {
    let ps = prompts(60, 3);
    let mut cfg = config(KvPolicy::Paged, 1024, 16);
    cfg.scheduler.headroom_blocks = pagedattn_engine::SchedulerConfig::default().headroom_blocks;
    let mut e = Engine::new(Mock::new(MAX_LEN), cfg).unwrap();
    e.generate(&ps, &params(80)).unwrap();
    e.check_invariants().unwrap();
    let t = e.totals();
    assert!(
        t.recompute_tax() < 0.05,
        "recompute tax {:.3} ({} preemptions)",
        t.recompute_tax(),
        t.preemptions
    );
}

#[test]
fn the_admission_headroom_follows_the_output_lengths() {
    // 40 short prompts with 6-token outputs; a 1024-token pool; a prior headroom of 8
    // blocks (128 tokens) per running sequence, far more than any sequence will use.
    let ps: Vec<Vec<u32>> = (0..40u32)
        .map(|i| (0..10).map(|j| (i * 7 + j) % 60 + 2).collect())
        .collect();
    let running_peak = |percent: usize| {
        let mut cfg = config(KvPolicy::Paged, 1024, 16);
        cfg.scheduler.headroom_blocks = 8;
        cfg.scheduler.headroom_percent = percent;
        let mut e = Engine::new(Mock::new(MAX_LEN), cfg).unwrap();
        e.generate(&ps, &params(6)).unwrap();
        e.check_invariants().unwrap();
        assert_eq!(e.totals().preemptions, 0);
        let steps = e.step_metrics();
        (
            steps[0].running,
            steps.iter().map(|s| s.running).max().unwrap(),
        )
    };
    // Before anything finishes, the prior holds the first wave to 1024 / (16 + 128) ~ 7.
    let (first, peak) = running_peak(20);
    assert!(first <= 8, "first wave {first}");
    // Once sequences finish, the estimated mean output (~6 tokens, one block of headroom)
    // lets many more run at once...
    assert!(peak >= 2 * first, "peak {peak} vs first wave {first}");
    // ...while a headroom of 30x the mean output stays near the prior's wave.
    let (_, cautious) = running_peak(3000);
    assert!(cautious < peak, "{cautious} vs {peak}");
}

#[test]
fn prefix_cache_hits_produce_the_same_tokens() {
    let system: Vec<u32> = (0..64).map(|i| i % 50 + 2).collect();
    let ps: Vec<Vec<u32>> = (0..8u32)
        .map(|i| system.iter().copied().chain([i + 2, i + 3]).collect())
        .collect();
    let expect = alone(&ps, 10);
    let mut e = Engine::new(
        Mock::new(MAX_LEN),
        config(KvPolicy::PagedPrefixCache, 4096, 16),
    )
    .unwrap();
    // One request first, so its blocks are cached when the others arrive.
    let first = e.generate(&ps[..1], &params(10)).unwrap();
    let rest = e.generate(&ps[1..], &params(10)).unwrap();
    let got: Vec<Vec<u32>> = first
        .into_iter()
        .chain(rest)
        .map(|mut v| v.remove(0))
        .collect();
    assert_eq!(got, expect);
    let st = e.block_manager_stats().unwrap();
    assert!(st.prefix_hits >= 7 * 64, "hits {}", st.prefix_hits);
    assert!(st.prefix_hit_rate > 0.5);
    e.check_invariants().unwrap();
}

#[test]
fn parallel_sampling_is_deterministic_and_shares_blocks() {
    let p = vec![(0..40).map(|i| i % 30 + 2).collect::<Vec<u32>>()];
    let sp = SamplingParams {
        n: 4,
        temperature: 1.0,
        seed: Some(9),
        ignore_eos: true,
        ..SamplingParams::greedy(12)
    };
    let gen = |policy| {
        let mut e = Engine::new(Mock::new(MAX_LEN), config(policy, 4096, 16)).unwrap();
        let out = e.generate(&p, &sp).unwrap();
        e.check_invariants().unwrap();
        (out, e)
    };
    let (a, e) = gen(KvPolicy::Paged);
    let (b, _) = gen(KvPolicy::Paged);
    assert_eq!(a, b);
    assert_eq!(a[0].len(), 4);
    assert!(a[0].iter().all(|s| s.len() == 12));
    assert!(a[0].iter().any(|s| s != &a[0][0]), "samples should differ");
    // Forks shared the prompt's blocks: only the partial last block was copied per child.
    let st = e.block_manager_stats().unwrap();
    assert_eq!(st.cow_copies, 3);
    // Contiguous sequences compute the prompt each; the same seeds give the same tokens.
    let (c, _) = gen(KvPolicy::Contiguous(ContiguousSizing::Oracle));
    assert_eq!(a, c);
}

#[test]
fn stop_tokens_and_eos_end_sequences() {
    let mut e = Engine::new(Mock::new(MAX_LEN), config(KvPolicy::Paged, 4096, 16)).unwrap();
    let ps = prompts(6, 4);
    let long = e.generate(&ps, &params(30)).unwrap();
    // Stop at the first token each produced: outputs have exactly one token.
    for (p, out) in ps.iter().zip(&long) {
        let sp = SamplingParams {
            stop_token_ids: vec![out[0][0]],
            ..params(30)
        };
        let got = e.generate(std::slice::from_ref(p), &sp).unwrap();
        assert_eq!(got[0][0], vec![out[0][0]]);
    }
    e.check_invariants().unwrap();
}

#[test]
fn a_models_end_of_turn_ids_end_sequences_as_eos_does() {
    let ps = prompts(6, 4);
    let long = Engine::new(Mock::new(MAX_LEN), config(KvPolicy::Paged, 4096, 16))
        .unwrap()
        .generate(&ps, &params(30))
        .unwrap();
    for (p, out) in ps.iter().zip(&long) {
        // The third token generated is one of the model's end-of-turn ids.
        let end = out[0][2];
        let mut mock = Mock::new(MAX_LEN);
        mock.end_of_turn = vec![end];
        let mut e = Engine::new(mock, config(KvPolicy::Paged, 4096, 16)).unwrap();
        let stops = SamplingParams {
            ignore_eos: false,
            ..params(30)
        };
        let got = e.generate(std::slice::from_ref(p), &stops).unwrap();
        let first_end = out[0].iter().position(|&t| t == end || t == 1).unwrap();
        assert_eq!(got[0][0], out[0][..=first_end], "prompt {p:?}");
        // Ignoring end-of-sequence ignores the end-of-turn ids too.
        let all = e.generate(std::slice::from_ref(p), &params(30)).unwrap();
        assert_eq!(all[0][0], out[0]);
        e.check_invariants().unwrap();
    }
}

#[test]
fn invalid_requests_are_refused_and_nothing_is_queued() {
    let mut e = Engine::new(Mock::new(MAX_LEN), config(KvPolicy::Paged, 4096, 16)).unwrap();
    let bad = |prompt: Vec<u32>, p: SamplingParams| Request::new(1, prompt, p);
    let cases = [
        bad(vec![], params(4)),
        bad(vec![2; 250], params(10)),
        bad(vec![2], SamplingParams { n: 0, ..params(4) }),
        bad(
            vec![2],
            SamplingParams {
                temperature: -1.0,
                ..params(4)
            },
        ),
        bad(
            vec![2],
            SamplingParams {
                top_p: 0.0,
                ..params(4)
            },
        ),
        bad(
            vec![2],
            SamplingParams {
                max_tokens: 0,
                ..params(4)
            },
        ),
        bad(vec![VOCAB as u32], params(4)),
    ];
    for r in cases {
        let err = e.add_request(r).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::EmptyPrompt(_)
                    | EngineError::TooLong { .. }
                    | EngineError::InvalidSampling { .. }
                    | EngineError::TokenOutOfVocab { .. }
            ),
            "{err}"
        );
        assert!(!e.has_unfinished());
    }
    e.add_request(bad(vec![2, 3], params(4))).unwrap();
    assert!(matches!(
        e.add_request(bad(vec![2], params(4))),
        Err(EngineError::DuplicateRequest(_))
    ));
    // Sizes that would overflow, and limits on n and logprobs.
    for p in [
        SamplingParams {
            max_tokens: usize::MAX,
            ..params(4)
        },
        SamplingParams {
            n: pagedattn_engine::MAX_N + 1,
            ..params(4)
        },
        SamplingParams {
            logprobs: Some(pagedattn_engine::MAX_LOGPROBS + 1),
            ..params(4)
        },
    ] {
        let err = e.add_request(Request::new(100, vec![2, 3], p)).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::TooLong { .. } | EngineError::InvalidSampling { .. }
            ),
            "{err}"
        );
    }
    // Aborting an unknown request is a no-op, not an error.
    assert!(e.abort(RequestId(77)).unwrap().is_empty());
    e.check_invariants().unwrap();
}

#[test]
fn abort_frees_everything_at_any_point() {
    for policy in KvPolicy::ALL {
        let mut e = Engine::new(Mock::new(MAX_LEN), config(policy, 1024, 16)).unwrap();
        for (i, p) in prompts(10, 5).into_iter().enumerate() {
            e.add_request(Request::new(
                i as u64,
                p,
                SamplingParams { n: 2, ..params(40) },
            ))
            .unwrap();
        }
        for step in 0..30 {
            e.step().unwrap();
            for s in e.sequences() {
                assert!(matches!(s.state(), SeqState::Running | SeqState::Waiting));
                assert!(s.num_computed() <= s.tokens().len());
            }
            if step % 3 == 0 {
                let _ = e.abort(RequestId(step / 3));
            }
            e.check_invariants().unwrap();
        }
        for i in 0..10 {
            let _ = e.abort(RequestId(i));
        }
        assert!(!e.has_unfinished());
        e.check_invariants().unwrap();
        assert_eq!(e.kv_usage().held_slots, 0, "{policy}");
        let aborted = e
            .finished_metrics()
            .iter()
            .filter(|m| m.finish_reason == Some(FinishReason::Aborted))
            .count();
        assert!(aborted > 0);
    }
}

#[test]
fn a_budget_below_one_max_length_sequence_fails_fast() {
    for policy in KvPolicy::ALL {
        let r = Engine::new(Mock::new(MAX_LEN), config(policy, 200, 16));
        assert!(
            matches!(r, Err(EngineError::KvCapacityTooSmall { .. })),
            "{policy}"
        );
    }
}

#[test]
fn metrics_are_consistent() {
    let ps = prompts(8, 6);
    let (_, e) = run(KvPolicy::Paged, 4096, 16, &ps, 10);
    let ms = e.finished_metrics();
    assert_eq!(ms.len(), 8);
    for m in ms {
        assert_eq!(m.token_times.len(), 10);
        assert!(m.ttft().unwrap() >= 0.0);
        assert!(m.e2e().unwrap() >= m.ttft().unwrap());
        assert!(m.tpot().unwrap() >= 0.0);
        assert_eq!(m.itl().count(), 9);
        assert_eq!(m.finish_reason, Some(FinishReason::Length));
    }
    let t = e.totals();
    assert_eq!(t.output_tokens, 80);
    let prompt_tokens: usize = ps.iter().map(Vec::len).sum();
    // Every prompt token once, every output token but the last of each sequence once.
    assert_eq!(t.computed_tokens as usize, prompt_tokens + 8 * 9);
    assert_eq!(e.step_metrics().len() as u64, t.steps);
}

#[test]
fn a_failed_step_ends_its_requests_and_the_engine_goes_on() {
    let ps = prompts(6, 9);
    let expect = alone(&ps, 12);
    for policy in KvPolicy::ALL {
        let mut mock = Mock::new(MAX_LEN);
        mock.fail_at_step = Some(3);
        let mut e = Engine::new(mock, config(policy, 4096, 16)).unwrap();
        for (i, p) in ps.iter().enumerate() {
            e.add_request(Request::new(i as u64, p.clone(), params(12)))
                .unwrap();
        }
        let mut outs: Vec<Vec<u32>> = vec![Vec::new(); ps.len()];
        let mut failed = Vec::new();
        while e.has_unfinished() {
            match e.step() {
                Ok(o) => {
                    for o in o {
                        outs[o.request.0 as usize].extend(o.new_tokens);
                    }
                }
                Err(EngineError::StepFailed { requests, source }) => {
                    assert_eq!(source.to_string(), "injected failure");
                    failed.extend(requests);
                }
                Err(other) => panic!("{policy}: {other}"),
            }
            e.check_invariants().unwrap();
        }
        assert!(!failed.is_empty(), "{policy}");
        assert_eq!(e.kv_usage().held_slots, 0, "{policy}: KV leaked");
        for (i, out) in outs.iter().enumerate() {
            if !failed.contains(&RequestId(i as u64)) {
                assert_eq!(out, &expect[i], "{policy}: request {i}");
            }
        }
        let errors = e
            .finished_metrics()
            .iter()
            .filter(|m| m.finish_reason == Some(FinishReason::Error))
            .count();
        assert_eq!(errors, failed.len(), "{policy}");
        // The failed prompts run again, correctly: no prefix-cache hit on K/V that the
        // failed step never wrote (the mock would read an unwritten slot, or a stale one).
        for &id in &failed {
            let p = ps[id.0 as usize].clone();
            let again = e.generate(&[p], &params(12)).unwrap();
            assert_eq!(again[0][0], expect[id.0 as usize], "{policy}: {id} rerun");
        }
        e.check_invariants().unwrap();
    }
}

#[test]
fn stop_sequence_frees_one_sample_and_is_a_no_op_afterwards() {
    let mut e = Engine::new(Mock::new(MAX_LEN), config(KvPolicy::Paged, 4096, 16)).unwrap();
    e.add_request(Request::new(
        5,
        prompts(1, 3).remove(0),
        SamplingParams { n: 3, ..params(30) },
    ))
    .unwrap();
    for _ in 0..4 {
        e.step().unwrap();
    }
    assert_eq!(e.sequences().count(), 3);
    let last = e.stop_sequence(RequestId(5), 1).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].finished, Some(FinishReason::Stop));
    assert!(last[0].metrics.is_some());
    assert_eq!(e.sequences().count(), 2);
    assert!(e.stop_sequence(RequestId(5), 1).unwrap().is_empty());
    assert!(e.stop_sequence(RequestId(99), 0).unwrap().is_empty());
    e.check_invariants().unwrap();
    let ended = e.abort(RequestId(5)).unwrap();
    assert_eq!(ended.len(), 2);
    assert!(e.abort(RequestId(5)).unwrap().is_empty());
    assert_eq!(e.kv_usage().held_slots, 0);
    e.check_invariants().unwrap();
}

#[test]
fn without_history_nothing_accumulates_and_metrics_come_with_the_last_output() {
    let mut cfg = config(KvPolicy::Paged, 4096, 16);
    cfg.keep_history = false;
    let mut e = Engine::new(Mock::new(MAX_LEN), cfg).unwrap();
    let mut finals = 0;
    for round in 0..5u64 {
        for (i, p) in prompts(4, round as u32).into_iter().enumerate() {
            e.add_request(Request::new(round * 10 + i as u64, p, params(6)))
                .unwrap();
        }
        while e.has_unfinished() {
            for o in e.step().unwrap() {
                if o.finished.is_some() {
                    let m = o.metrics.expect("metrics with the last output");
                    assert_eq!(m.token_times.len(), 6);
                    assert!(m.ttft().unwrap() >= 0.0);
                    finals += 1;
                } else {
                    assert!(o.metrics.is_none());
                }
            }
        }
    }
    assert_eq!(finals, 20);
    assert!(e.finished_metrics().is_empty());
    assert!(e.step_metrics().is_empty());
    assert!(e.last_step().is_some());
    assert_eq!(e.totals().finished_requests, 20);
    e.check_invariants().unwrap();
}

#[test]
fn ending_a_parallel_request_before_its_forks_exist_reports_every_sample() {
    // A paged n = 3 request forks its samples when its prompt is done; ended during the
    // prefill (96 tokens a step, a 250-token prompt), it must still end all three.
    for end in ["abort", "stop"] {
        let mut e = Engine::new(Mock::new(MAX_LEN), config(KvPolicy::Paged, 4096, 16)).unwrap();
        e.add_request(Request::new(
            1,
            vec![7; 200],
            SamplingParams { n: 3, ..params(20) },
        ))
        .unwrap();
        assert!(e.step().unwrap().is_empty());
        let outs = match end {
            "abort" => e.abort(RequestId(1)).unwrap(),
            _ => e.stop_sequence(RequestId(1), 0).unwrap(),
        };
        let mut idx: Vec<usize> = outs.iter().map(|o| o.index).collect();
        idx.sort_unstable();
        assert_eq!(idx, vec![0, 1, 2], "{end}");
        assert!(outs
            .iter()
            .all(|o| o.finished.is_some() && o.metrics.is_some()));
        assert!(!e.has_unfinished());
        assert_eq!(e.kv_usage().held_slots, 0);
        e.check_invariants().unwrap();
    }
}
