//! Quantized blocks written and dequantized by an independent implementation (the `gguf`
//! Python package; `scripts/reference/quant_fixtures.py`): read as a GGUF tensor, every
//! value matches the package's, and the products on every instruction-set path match an
//! f64 product of those values within the bound activation quantization allows.

use pagedattn_kernels::testing::every_path;
use pagedattn_kernels::{qlinear, QuantMatrix, QuantType, QK};
use serde_json::Value;

fn ty(name: &str) -> QuantType {
    match name {
        "Q4_0" => QuantType::Q4_0,
        "Q4_1" => QuantType::Q4_1,
        "Q8_0" => QuantType::Q8_0,
        "Q4_K" => QuantType::Q4K,
        "Q5_K" => QuantType::Q5K,
        "Q6_K" => QuantType::Q6K,
        other => panic!("unknown type {other}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn blocks_from_the_gguf_package_read_and_multiply_correctly() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/quant_blocks.json")).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["type"].as_str().unwrap();
        let (rows, cols) = (
            case["rows"].as_u64().unwrap() as usize,
            case["cols"].as_u64().unwrap() as usize,
        );
        let want: Vec<f32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let w = QuantMatrix::new(ty(name), rows, cols, &hex(case["bytes"].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut row = vec![0.0; cols];
        for r in 0..rows {
            w.row_into(r, &mut row).unwrap();
            for (i, (g, x)) in row.iter().zip(&want[r * cols..]).enumerate() {
                assert!(
                    (g - x).abs() <= 1e-6 * x.abs(),
                    "{name} row {r} value {i}: {g} vs {x}"
                );
            }
        }
        // Products: x with a few large entries, as activations have.
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0 * if i % 41 == 0 { 6.0 } else { 1.0 })
            .collect();
        every_path(|cpu| {
            let mut y = vec![0.0; rows];
            qlinear(cpu, &x, &w, &mut y, false).unwrap();
            for r in 0..rows {
                let wr = &want[r * cols..(r + 1) * cols];
                let exact: f64 = wr
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                // |x - int8(x)| <= d_x / 2 per value, d_x = max |x| / 127 per block of 32.
                let bound: f64 = wr
                    .chunks_exact(QK)
                    .zip(x.chunks_exact(QK))
                    .map(|(wb, xb)| {
                        let dx = f64::from(xb.iter().fold(0.0f32, |m, v| m.max(v.abs()))) / 127.0;
                        dx / 2.0 * wb.iter().map(|v| f64::from(v.abs())).sum::<f64>()
                    })
                    .sum();
                let got = f64::from(y[r]);
                assert!(
                    (got - exact).abs() <= bound * 1.001 + 1e-4,
                    "{name} {cpu} row {r}: {got} vs {exact} (bound {bound})"
                );
            }
        });
    }
}
