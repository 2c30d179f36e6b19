//! Throughput of [`pagedattn_kernels::qlinear`] on one layer's shapes of SmolLM2-135M
//! (Q/K/V fused, output, gate/up fused, down) in `Q4_1`, and on its `Q8_0` LM head,
//! rotating over enough weight copies to exceed the last-level cache, for 1 to 128 rows.
//!
//! ```sh
//! cargo run --release -p pagedattn-kernels --example qlinear [-- scalar|avx2|avx512]
//! ```

use pagedattn_kernels::{qlinear, Cpu, QuantMatrix, QuantType};
use std::time::Instant;

fn bench(cpu: Cpu, name: &str, ty: QuantType, copies: usize, shapes: &[(usize, usize)]) {
    let layers: Vec<Vec<QuantMatrix>> = (0..copies)
        .map(|c| {
            shapes
                .iter()
                .map(|&(n, k)| {
                    let w: Vec<f32> = (0..n * k)
                        .map(|i| ((i + c) % 17) as f32 * 0.01 - 0.08)
                        .collect();
                    QuantMatrix::quantize(ty, n, k, &w).unwrap()
                })
                .collect()
        })
        .collect();
    let bytes: usize = layers[0].iter().map(QuantMatrix::bytes).sum();
    let macs: usize = shapes.iter().map(|&(n, k)| n * k).sum();
    for m in [1, 2, 4, 8, 16, 32, 128] {
        let x: Vec<f32> = (0..m * 1536).map(|i| (i % 29) as f32 * 0.1 - 1.4).collect();
        let mut y = vec![0.0f32; m * 49152];
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            for layer in &layers {
                for (w, &(n, k)) in layer.iter().zip(shapes) {
                    qlinear(cpu, &x[..m * k], w, &mut y[..m * n], false).unwrap();
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let per = best / copies as f64;
        println!(
            "{name} m={m:3}: {:.3} ms, {:.1} GB/s of weights, {:.1} GMAC/s",
            per * 1e3,
            bytes as f64 / per / 1e9,
            (macs * m) as f64 / per / 1e9
        );
    }
}

fn main() {
    // A path name as `PAGEDATTN_ISA` takes it (e.g. `avx512+vnni`, `avx2`), or the selected one.
    let cpu = match std::env::args().nth(1) {
        Some(name) => Cpu::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}")),
        None => Cpu::selected(),
    };
    println!("path {cpu}, {} threads", rayon::current_num_threads());
    let layer = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
    bench(cpu, "Q4_1 layer", QuantType::Q4_1, 60, &layer);
    bench(cpu, "Q8_0 head ", QuantType::Q8_0, 4, &[(49152, 576)]);
}
