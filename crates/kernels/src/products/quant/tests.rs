#![allow(clippy::needless_range_loop)] // block layouts are clearest by index
use super::*;
use crate::products::quant::blocks::{quantize_block, QK_K};
use crate::testing::every_path;

fn data(len: usize, seed: u64) -> Vec<f32> {
    // A small LCG: values in [-1, 1) with a few outliers, as real weights and activations.
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|i| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_precision_loss)]
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 97 == 0 {
                u * 8.0
            } else {
                u
            }
        })
        .collect()
}

const TYPES: [QuantType; 3] = [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0];
const ALL: [QuantType; 6] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q8_0,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
];

/// `rows` rows of `nb` blocks of `ty` in the file's layout: random codes and scale bytes,
/// with the f16 scales set to finite values of a weight's size.
fn random_blocks(ty: QuantType, rows: usize, nb: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(3);
    let mut next = move || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 33) as u32
    };
    let bb = ty.block_bytes();
    let mut out: Vec<u8> = (0..rows * nb * bb).map(|_| next() as u8).collect();
    let mut f16_at = |b: &mut [u8], at: usize, lo: f32, hi: f32| {
        let u = (next() % 1000) as f32 / 1000.0;
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(lo + (hi - lo) * u).to_le_bytes());
    };
    for b in out.chunks_exact_mut(bb) {
        match ty {
            QuantType::Q4_0 | QuantType::Q8_0 => f16_at(b, 0, -0.02, 0.02),
            QuantType::Q4_1 => {
                f16_at(b, 0, 0.0, 0.02);
                f16_at(b, 2, -0.2, 0.0);
            }
            QuantType::Q4K | QuantType::Q5K => {
                f16_at(b, 0, 0.0, 0.002);
                f16_at(b, 2, 0.0, 0.002);
            }
            QuantType::Q6K => f16_at(b, 208, 0.0, 0.001),
        }
    }
    out
}

/// For each output: the f64 product of the dequantized weights with (a) `x` itself and
/// (b) `x` after int8 block quantization, and the bound on |a - product| that the
/// activation quantization allows: sum over blocks of `d_x / 2 * sum |w|`.
fn reference(w: &QuantMatrix, x: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, k) = (w.rows(), w.cols());
    let m = x.len() / k;
    let mut wf = vec![0.0f32; n * k];
    for (r, row) in wf.chunks_exact_mut(k).enumerate() {
        w.row_into(r, row).unwrap();
    }
    let mut xa = vec![ActBlock::default(); k / QK];
    let (mut exact, mut quantized, mut bound) = (vec![], vec![], vec![]);
    for xr in x.chunks_exact(k) {
        for (b, xs) in xa.iter_mut().zip(xr.chunks_exact(QK)) {
            quantize_block(xs, b);
        }
        let xq: Vec<f64> = xa
            .iter()
            .flat_map(|b| b.q.map(|q| f64::from(b.d) * f64::from(q)))
            .collect();
        for wr in wf.chunks_exact(k) {
            exact.push(
                wr.iter()
                    .zip(xr)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum(),
            );
            quantized.push(wr.iter().zip(&xq).map(|(&a, &b)| f64::from(a) * b).sum());
            bound.push(
                wr.chunks_exact(QK)
                    .zip(&xa)
                    .map(|(wb, b)| {
                        f64::from(b.d) / 2.0 * wb.iter().map(|v| f64::from(v.abs())).sum::<f64>()
                    })
                    .sum(),
            );
        }
    }
    assert_eq!(exact.len(), m * n);
    (exact, quantized, bound)
}

/// `qlinear` on `path` of `x` and `w` against [`reference`]: (b) within f32 rounding of the
/// f64 product with the int8 activations (the integer sums are exact), and (a) within the
/// activation-quantization bound of the f64 product with `x` itself. Returns the product.
fn check_products(path: Cpu, w: &QuantMatrix, x: &[f32]) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    let m = x.len() / k;
    let (exact, quantized, bound) = reference(w, x);
    let mut y = vec![f32::NAN; m * n];
    qlinear(path, x, w, &mut y, false).unwrap();
    let ty = w.ty();
    for (i, &got) in y.iter().enumerate() {
        let got = f64::from(got);
        let tol = 1e-5 * (1.0 + quantized[i].abs()) + 1e-4 * bound[i];
        assert!(
            (got - quantized[i]).abs() <= tol,
            "{ty:?} {path} {m}x{n}x{k} [{i}]: {got} vs {} (int8 x)",
            quantized[i]
        );
        assert!(
            (got - exact[i]).abs() <= bound[i] * 1.001 + 1e-5,
            "{ty:?} {path} [{i}]: {got} vs {} (bound {})",
            exact[i],
            bound[i]
        );
    }
    y
}

#[test]
fn every_type_and_path_matches_the_f64_product_within_the_quantization_bound() {
    for ty in TYPES {
        for &(m, n, k) in &[
            (1, 7, 32),
            (1, 64, 576),
            (3, 13, 64),
            (5, 40, 160),
            (9, 8, 96),
        ] {
            let w = QuantMatrix::quantize(ty, n, k, &data(n * k, 1)).unwrap();
            let x = data(m * k, 2);
            every_path(|path| {
                let mut y = check_products(path, &w, &x);
                // Accumulating adds the same product again.
                let before = y.clone();
                qlinear(path, &x, &w, &mut y, true).unwrap();
                for (a, b) in y.iter().zip(&before) {
                    assert!(
                        (a - 2.0 * b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{a} vs 2 x {b}"
                    );
                }
            });
        }
    }
}

#[test]
fn large_products_split_across_threads_agree_with_one_thread() {
    let (m, n, k) = (6, 1030, 256);
    for ty in TYPES {
        let w = QuantMatrix::quantize(ty, n, k, &data(n * k, 3)).unwrap();
        let x = data(m * k, 4);
        every_path(|path| {
            let mut y = vec![0.0; m * n];
            qlinear(path, &x, &w, &mut y, false).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let mut y1 = vec![0.0; m * n];
            pool.install(|| qlinear(path, &x, &w, &mut y1, false))
                .unwrap();
            assert_eq!(y, y1, "{ty:?} {path}");
        });
    }
}

#[test]
fn a_row_does_not_depend_on_the_rows_beside_it() {
    let (n, k) = (12, 128);
    let w = QuantMatrix::quantize(QuantType::Q4_1, n, k, &data(n * k, 5)).unwrap();
    let x = data(7 * k, 6);
    every_path(|path| {
        let mut all = vec![0.0; 7 * n];
        qlinear(path, &x, &w, &mut all, false).unwrap();
        for (i, row) in x.chunks_exact(k).enumerate() {
            let mut one = vec![0.0; n];
            qlinear(path, row, &w, &mut one, false).unwrap();
            assert_eq!(one, all[i * n..(i + 1) * n], "{path} row {i}");
        }
    });
}

/// Every row count from 1 to 33 (every tile height and leftover on every path) on every
/// block type, and weight rows not a multiple of the group of eight: each row of the
/// product equals that row multiplied alone, bit for bit (a row's arithmetic does not
/// depend on the tile it lands in), and within the bounds of [`check_products`].
#[test]
fn every_row_count_to_33_gives_each_row_its_own_product() {
    for ty in TYPES
        .into_iter()
        .chain([QuantType::Q4K, QuantType::Q5K, QuantType::Q6K])
    {
        let (n, k) = (21, ty.block_values() * 2);
        let w = if ty.block_values() == QK {
            QuantMatrix::quantize(ty, n, k, &data(n * k, 11)).unwrap()
        } else {
            QuantMatrix::new(ty, n, k, &random_blocks(ty, n, 2, 12)).unwrap()
        };
        let x = data(33 * k, 13);
        every_path(|path| {
            let alone: Vec<Vec<f32>> = x
                .chunks_exact(k)
                .map(|row| {
                    let mut y = vec![0.0; n];
                    qlinear(path, row, &w, &mut y, false).unwrap();
                    y
                })
                .collect();
            for m in 1..=33 {
                let y = check_products(path, &w, &x[..m * k]);
                for (i, want) in alone[..m].iter().enumerate() {
                    assert_eq!(&y[i * n..(i + 1) * n], want, "{ty:?} {path} m={m} row {i}");
                }
            }
        });
    }
}

#[test]
fn block_layouts_from_bytes() {
    // Q4_0: d = 0.5, nibble j = j, high nibble 15 - j: values (q - 8) * d.
    let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut out = [0.0f32; QK];
    dequantize(QuantType::Q4_0, &b, &mut out);
    for j in 0..16 {
        assert!((out[j] - (j as f32 - 8.0) * 0.5).abs() < 1e-6);
        assert!((out[j + 16] - (7.0 - j as f32) * 0.5).abs() < 1e-6);
    }
    // Q4_1: d = 0.25, m = -1.
    let mut b = half::f16::from_f32(0.25).to_le_bytes().to_vec();
    b.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    dequantize(QuantType::Q4_1, &b, &mut out);
    for j in 0..16 {
        assert!((out[j] - (j as f32 * 0.25 - 1.0)).abs() < 1e-6);
    }
    // Q8_0 signed bytes.
    let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
    b.extend((0..32).map(|j: i32| ((j - 16) as i8).cast_unsigned()));
    dequantize(QuantType::Q8_0, &b, &mut out);
    for (j, v) in out.iter().enumerate() {
        assert!((v - (j as f32 - 16.0) * 2.0).abs() < 1e-6);
    }
}

#[test]
fn quantizing_round_trips_within_half_a_step() {
    let (n, k) = (4, 64);
    let src = data(n * k, 7);
    for ty in TYPES {
        let w = QuantMatrix::quantize(ty, n, k, &src).unwrap();
        let mut back = vec![0.0; k];
        for r in 0..n {
            w.row_into(r, &mut back).unwrap();
            for (b, (got, want)) in back
                .chunks_exact(QK)
                .zip(src[r * k..].chunks_exact(QK))
                .enumerate()
            {
                let amax = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                // Half a step, except Q4_0's clipped end: its 16 levels span -8d..7d, so
                // the value opposite the largest magnitude may be off by a whole step.
                let step = match ty {
                    QuantType::Q8_0 => amax / 127.0,
                    QuantType::Q4_1 => 2.0 * amax / 15.0,
                    _ => 2.0 * amax / 8.0,
                };
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= step * 0.5 + 1e-2 * amax,
                        "{ty:?} r{r} b{b}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_shapes_and_lengths_are_errors() {
    assert!(QuantMatrix::new(QuantType::Q4_1, 2, 33, &[0; 40]).is_err());
    assert!(QuantMatrix::new(QuantType::Q4_1, 2, 32, &[0; 39]).is_err());
    assert!(QuantMatrix::new(QuantType::Q8_0, usize::MAX, 64, &[]).is_err());
    let w = QuantMatrix::new(QuantType::Q4_1, 2, 32, &[0; 40]).unwrap();
    let mut y = vec![0.0; 3];
    assert!(qlinear(Cpu::scalar(), &[0.0; 64], &w, &mut y, false).is_err());
    assert!(qlinear(Cpu::scalar(), &[0.0; 33], &w, &mut y, false).is_err());
    assert!(w.row_into(2, &mut [0.0; 32]).is_err());
}

/// Every path's activation quantizer equals the definition bit for bit: ordinary blocks,
/// outliers, zeros, ties, values near the clamp, subnormal scales and non-finite values.
#[test]
fn every_path_quantizes_activations_as_the_definition() {
    let mut blocks: Vec<[f32; QK]> = (0..64)
        .map(|i| {
            let d = data(QK, 100 + i);
            std::array::from_fn(|j| d[j] * (1 << (i % 12)) as f32)
        })
        .collect();
    blocks.push([0.0; QK]);
    // Ties: amax 127 makes inv 1, so halves round to even.
    blocks.push(std::array::from_fn(|j| {
        if j == 0 {
            127.0
        } else {
            j as f32 - 16.5
        }
    }));
    blocks.push(std::array::from_fn(|j| if j == 3 { -1e-40 } else { 0.0 }));
    blocks.push(std::array::from_fn(|j| [1e30, -3e38, f32::MAX][j % 3]));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 13, 31] {
            let mut b: [f32; QK] = std::array::from_fn(|j| j as f32);
            b[at] = bad;
            blocks.push(b);
        }
    }
    let x: Vec<f32> = blocks.concat();
    let mut want = vec![ActBlock::default(); blocks.len()];
    for (b, xs) in want.iter_mut().zip(x.chunks_exact(QK)) {
        quantize_block(xs, b);
    }
    let key = |b: &ActBlock| (b.d.to_bits(), b.s.to_bits(), b.qsum, b.qsum_lo, b.q);
    every_path(|cpu| {
        let mut got = vec![ActBlock::default(); blocks.len()];
        run_int8(
            cpu,
            Quantize {
                x: &x,
                out: &mut got,
            },
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(key(g), key(w), "{cpu}: block {i}: {:?}", &blocks[i]);
        }
    });
}

/// Activations so small that the block's scale is subnormal (its inverse overflows): the
/// block counts as zeros, the output is finite and about zero on every path, never NaN.
#[test]
fn subnormal_activation_blocks_give_finite_outputs() {
    let w = QuantMatrix::quantize(QuantType::Q4_1, 9, 64, &data(9 * 64, 3)).unwrap();
    let mut x = vec![0.0f32; 64];
    x[0] = 1e-40;
    x[5] = -3e-39;
    x[40] = 1e-41;
    every_path(|path| {
        let mut y = vec![f32::NAN; 9];
        qlinear(path, &x, &w, &mut y, false).unwrap();
        assert!(
            y.iter().all(|v| v.is_finite() && v.abs() < 1e-30),
            "{path}: {y:?}"
        );
    });
}

#[test]
fn a_non_finite_activation_gives_nan_not_garbage() {
    let w = QuantMatrix::quantize(QuantType::Q8_0, 2, 32, &[0.5; 64]).unwrap();
    let mut x = [1.0f32; 32];
    x[3] = f32::INFINITY;
    every_path(|path| {
        let mut y = [0.0; 2];
        qlinear(path, &x, &w, &mut y, false).unwrap();
        assert!(y.iter().all(|v| v.is_nan()), "{path}: {y:?}");
    });
}

#[test]
fn packed_rows_dequantize_to_the_file_layout_values() {
    for ty in ALL {
        for rows in [1, 7, 8, 9, 17] {
            let nb = 2;
            let file = random_blocks(ty, rows, nb, rows as u64);
            let packed = pack(ty, rows, nb, &file);
            assert_eq!(packed.len(), rows.div_ceil(8) * nb * ty.unit_bytes());
            let (bb, bv) = (ty.block_bytes(), ty.block_values());
            for r in 0..rows {
                let mut want = vec![0.0; nb * bv];
                dequantize(ty, &file[r * nb * bb..(r + 1) * nb * bb], &mut want);
                let mut got = vec![f32::NAN; nb * bv];
                dequantize_packed_row(ty, nb, &packed, r, &mut got);
                assert_eq!(got, want, "{ty:?} row {r} of {rows}");
            }
        }
    }
}

#[test]
fn k_quants_from_random_blocks_match_the_f64_product_on_every_path() {
    for ty in [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K] {
        for &(m, n, nb) in &[(1, 8, 1), (3, 13, 2), (9, 16, 1), (5, 24, 3)] {
            let k = nb * QK_K;
            let w = QuantMatrix::new(ty, n, k, &random_blocks(ty, n, nb, 9)).unwrap();
            let x = data(m * k, 10);
            every_path(|path| {
                check_products(path, &w, &x);
            });
        }
    }
}
