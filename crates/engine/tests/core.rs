//! The engine thread and its handle: streams, aborts by drop, failed steps, idle blocking.

mod common;

use common::{config, Mock};
use pagedattn_engine::core::{spawn, EngineHandle, Event};
use pagedattn_engine::{Engine, FinishReason, KvPolicy, SamplingParams};
use std::time::{Duration, Instant};

fn params(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    }
}

fn handle(policy: KvPolicy, mock: Mock) -> EngineHandle {
    let mut cfg = config(policy, 4096, 16);
    cfg.keep_history = false;
    spawn(Engine::new(mock, cfg).unwrap()).unwrap()
}

/// Waits (bounded) until the engine's published stats satisfy `ok`.
fn wait_for(
    h: &EngineHandle,
    what: &str,
    ok: impl Fn(&pagedattn_engine::core::EngineStats) -> bool,
) {
    let t = Instant::now();
    while !ok(&h.stats()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: {:?}",
            h.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Tokens per sequence and finish reasons of one request, read to the end.
fn drain(s: &mut pagedattn_engine::core::RequestStream) -> (Vec<Vec<u32>>, Vec<FinishReason>) {
    let mut toks = vec![Vec::new(); 4];
    let mut reasons = Vec::new();
    while let Some(ev) = s.blocking_next() {
        match ev {
            Event::Output(o) => {
                toks[o.index].extend(o.new_tokens);
                if let Some(r) = o.finished {
                    let m = o.metrics.expect("final output carries metrics");
                    assert!(m.ttft().is_some() && m.e2e().is_some());
                    reasons.push(r);
                }
            }
            Event::Failed(m) => panic!("failed: {m}"),
        }
    }
    toks.retain(|t| !t.is_empty());
    (toks, reasons)
}

#[test]
fn streams_carry_the_same_tokens_as_the_engine_alone() {
    let ps: Vec<Vec<u32>> = (0..8)
        .map(|i| (0..5 + i).map(|j| (j * 7 + i) % 60 + 2).collect())
        .collect();
    let mut alone = Engine::new(Mock::new(256), config(KvPolicy::Paged, 4096, 16)).unwrap();
    let expect = alone
        .generate(&ps, &SamplingParams { n: 2, ..params(9) })
        .unwrap();
    for policy in [KvPolicy::Paged, KvPolicy::PagedPrefixCache] {
        let h = handle(policy, Mock::new(256));
        let mut streams: Vec<_> = ps
            .iter()
            .map(|p| {
                h.add(
                    p.clone(),
                    SamplingParams { n: 2, ..params(9) },
                    Instant::now(),
                )
                .unwrap()
            })
            .collect();
        for (i, s) in streams.iter_mut().enumerate() {
            let (toks, reasons) = drain(s);
            assert_eq!(toks, expect[i], "{policy} request {i}");
            assert_eq!(reasons, vec![FinishReason::Length; 2]);
        }
        wait_for(&h, "all finished", |s| {
            s.running == 0 && s.kv.held_slots == 0
        });
        assert_eq!(h.num_in_flight(), 0);
        assert_eq!(h.num_not_started(), 0);
        assert_eq!(h.stats().totals.finished_requests, ps.len() as u64);
    }
}

#[test]
fn dropping_a_stream_aborts_its_request_and_frees_its_blocks() {
    let mut mock = Mock::new(256);
    mock.step_delay = Duration::from_millis(2);
    let h = handle(KvPolicy::Paged, mock);
    let mut s = h.add(vec![3; 40], params(200), Instant::now()).unwrap();
    // Read a few tokens, then walk away like a disconnected client.
    let mut got = 0;
    while got < 3 {
        if let Some(Event::Output(o)) = s.blocking_next() {
            got += o.new_tokens.len();
        }
    }
    assert!(h.stats().kv.held_slots > 0);
    drop(s);
    wait_for(&h, "blocks freed", |st| {
        st.running == 0 && st.kv.held_slots == 0
    });
    assert_eq!(h.num_in_flight(), 0);
    // Aborting what has ended, or never existed, is a no-op; the engine keeps serving.
    h.abort(pagedattn_engine::RequestId(12345));
    let mut again = h.add(vec![3; 10], params(4), Instant::now()).unwrap();
    assert_eq!(drain(&mut again).0[0].len(), 4);
}

#[test]
fn a_failed_step_fails_its_requests_and_the_thread_goes_on() {
    let mut mock = Mock::new(256);
    mock.fail_at_step = Some(2);
    let h = handle(KvPolicy::PagedPrefixCache, mock);
    let mut s = h.add(vec![5; 30], params(20), Instant::now()).unwrap();
    let mut failed = false;
    while let Some(ev) = s.blocking_next() {
        if let Event::Failed(m) = ev {
            assert!(m.contains("injected failure"), "{m}");
            failed = true;
        }
    }
    assert!(failed);
    wait_for(&h, "blocks freed", |st| st.kv.held_slots == 0);
    let mut next = h.add(vec![5; 30], params(6), Instant::now()).unwrap();
    assert_eq!(drain(&mut next).0[0].len(), 6);
}

#[test]
fn invalid_requests_are_refused_before_queueing() {
    let h = handle(KvPolicy::Paged, Mock::new(256));
    assert!(h.add(vec![], params(4), Instant::now()).is_err());
    assert!(h
        .add(vec![2; 10], params(usize::MAX), Instant::now())
        .is_err());
    assert!(h.add(vec![999], params(4), Instant::now()).is_err());
    assert_eq!(h.num_in_flight(), 0);
}

#[test]
fn abort_all_ends_every_stream() {
    let mut mock = Mock::new(256);
    mock.step_delay = Duration::from_millis(2);
    let h = handle(KvPolicy::Paged, mock);
    let mut streams: Vec<_> = (0..4)
        .map(|i| h.add(vec![2 + i; 20], params(200), Instant::now()).unwrap())
        .collect();
    wait_for(&h, "running", |s| s.running > 0);
    h.abort_all();
    for s in &mut streams {
        let (_, reasons) = drain(s);
        assert_eq!(reasons, vec![FinishReason::Aborted]);
    }
    wait_for(&h, "blocks freed", |s| {
        s.kv.held_slots == 0 && s.running == 0
    });
    assert_eq!(h.num_in_flight(), 0);
    assert!(h.is_alive());
}
