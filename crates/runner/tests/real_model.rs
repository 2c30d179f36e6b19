//! The engine over a real model (the `tiny` random-weight config; SmolLM2-135M too when
//! `models/` has it): batching, preemption and every KV policy give the same greedy
//! tokens as running each request alone; and with the file's own quantized weights, a
//! decode step of 16 sequences gives each the tokens it gets alone (every row of a batched
//! int8 product is computed as it is alone, so the tolerance is zero).

use pagedattn_engine::{
    Engine, EngineConfig, EngineTotals, KvPolicy, SamplingParams, SchedulerConfig,
};
use pagedattn_kernels::DType;
use pagedattn_model::{LoadOptions, Model, WeightDType};
use pagedattn_runner::ModelExecutor;
use std::path::Path;
use std::sync::Arc;

fn prompts(n: usize, vocab: u32) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..5 + (i * 29) % 70)
                .map(|j| (i as u32 * 31 + j as u32 * 17) % (vocab - 3) + 3)
                .collect()
        })
        .collect()
}

fn generate(
    model: &Arc<Model>,
    policy: KvPolicy,
    budget_tokens: u64,
    ps: &[Vec<u32>],
    max_tokens: usize,
) -> (Vec<Vec<u32>>, EngineTotals) {
    let exec = ModelExecutor::new(model.clone(), DType::F32);
    let per_token = model.config().kv_shape(DType::F32).bytes_per_token();
    let cfg = EngineConfig {
        policy,
        kv_budget_bytes: budget_tokens * per_token,
        block_size: 8,
        max_model_len: Some(256),
        scheduler: SchedulerConfig {
            max_num_seqs: 32,
            max_num_batched_tokens: 64,
            headroom_blocks: 1,
            headroom_percent: 20,
        },
        keep_history: true,
    };
    let mut e = Engine::new(exec, cfg).unwrap();
    let sp = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    };
    let out = e.generate(ps, &sp).unwrap();
    e.check_invariants().unwrap();
    assert_eq!(e.kv_usage().held_slots, 0);
    (
        out.into_iter().map(|mut v| v.remove(0)).collect(),
        e.totals(),
    )
}

/// Each prompt's greedy tokens, run alone in its own engine.
fn each_alone(model: &Arc<Model>, ps: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    ps.iter()
        .map(|p| {
            generate(
                model,
                KvPolicy::Paged,
                4096,
                std::slice::from_ref(p),
                max_tokens,
            )
            .0
            .remove(0)
        })
        .collect()
}

fn check(model: &Arc<Model>, n: usize, max_tokens: usize) {
    let ps = prompts(n, model.config().vocab_size as u32);
    let alone = each_alone(model, &ps, max_tokens);
    for policy in KvPolicy::ALL {
        let (got, _) = generate(model, policy, 4096, &ps, max_tokens);
        assert_eq!(got, alone, "{policy}: batched output differs from alone");
    }
    // A pool of 300 slots forces preemption; outputs stay the same.
    let (got, totals) = generate(model, KvPolicy::Paged, 300, &ps, max_tokens);
    assert_eq!(got, alone, "with preemption");
    assert!(
        totals.preemptions > 0,
        "the pool was meant to force preemption"
    );
}

#[test]
fn tiny_model_outputs_do_not_depend_on_batching_policy_or_preemption() {
    let model = Arc::new(Model::random_named("tiny", 7, WeightDType::F32).unwrap());
    check(&model, 10, 24);
}

fn smollm2(dtype: WeightDType) -> Arc<Model> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    // A missing model fails: a test that passes without running would prove nothing.
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model.sh (the README's test command does)",
        path.display()
    );
    Arc::new(Model::load(&path, LoadOptions { dtype }).unwrap())
}

#[test]
fn smollm2_outputs_do_not_depend_on_batching() {
    check(&smollm2(WeightDType::F32), 6, 40);
}

#[test]
fn smollm2_native_batch_of_16_gives_each_sequence_its_tokens_alone() {
    let (n, max_tokens) = (16, 24);
    let model = smollm2(WeightDType::Native);
    let ps = prompts(n, model.config().vocab_size as u32);
    let alone = each_alone(&model, &ps, max_tokens);
    let (got, totals) = generate(&model, KvPolicy::Paged, 4096, &ps, max_tokens);
    // Together, 620 prompt tokens and 16 x 24 decode tokens at 64 per step take about 40
    // steps; one sequence at a time they would take at least 16 x 24 = 384.
    assert!(
        totals.steps < 80,
        "{} steps: the 16 sequences did not decode together",
        totals.steps
    );
    for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
        assert_eq!(g, a, "sequence {i}: batched output differs from alone");
    }
}
