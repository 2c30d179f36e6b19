//! Throughput of [`pagedattn_kernels::linear`] on one layer's shapes of SmolLM2-135M,
//! rotating over enough weight copies to exceed the last-level cache.
//!
//! ```sh
//! cargo run --release -p pagedattn-kernels --example linear
//! ```

use half::bf16;
use pagedattn_kernels::{linear, Cpu, KvElem, PackedMatrix};
use std::time::Instant;

fn bench<T: KvElem>(name: &str, copies: usize, shapes: &[(usize, usize)]) {
    let layers: Vec<Vec<PackedMatrix<T>>> = (0..copies)
        .map(|c| {
            shapes
                .iter()
                .map(|&(n, k)| {
                    let w: Vec<f32> = (0..n * k).map(|i| ((i + c) % 17) as f32 * 0.01).collect();
                    PackedMatrix::from_f32(&w, k).unwrap()
                })
                .collect()
        })
        .collect();
    let bytes: usize = shapes.iter().map(|&(n, k)| n * k * size_of::<T>()).sum();
    for m in [1, 2, 4, 8, 16, 32, 128] {
        let x = vec![0.5f32; m * 1536];
        let mut y = vec![0.0f32; m * 49152];
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            for layer in &layers {
                for (w, &(n, k)) in layer.iter().zip(shapes) {
                    linear(Cpu::selected(), &x[..m * k], w, &mut y[..m * n], false).unwrap();
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let per_layer = best / copies as f64;
        println!(
            "{name} m={m:2}: {:.3} ms per layer, {:.1} GB/s of weights, {:.1} GFLOP/s",
            per_layer * 1e3,
            bytes as f64 / per_layer / 1e9,
            (bytes / size_of::<T>() * m * 2) as f64 / per_layer / 1e9
        );
    }
}

fn main() {
    println!(
        "isa {}, {} threads",
        Cpu::selected(),
        rayon::current_num_threads()
    );
    let layer = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
    bench::<f32>("f32 layer", 60, &layer);
    bench::<bf16>("bf16 layer", 120, &layer);
    bench::<bf16>("bf16 lm_head", 8, &[(49152, 576)]);
}
