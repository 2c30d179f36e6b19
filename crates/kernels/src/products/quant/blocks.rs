//! GGML's quantized block layouts, their dequantization (the specification every product
//! path is tested against), their regrouping for the products, and the int8 quantization
//! of activations.
//!
//! Blocks of 32 values with an f16 scale `d`:
//! - `Q4_0`: `d, nibbles[16]` (18 bytes), value `d * (q - 8)`;
//! - `Q4_1`: `d, m, nibbles[16]` (20 bytes), value `d * q + m`;
//! - `Q8_0`: `d, q[32]` (34 bytes, `q` signed), value `d * q`;
//!
//! in the 4-bit types the low nibble of byte `j` is value `j` and the high nibble `j + 16`.
//! Super-blocks of 256 values ("k-quants"), eight sub-blocks of 32:
//! - `Q4_K`: `d, dmin, scales[12], qs[128]` (144 bytes): sub-block `s` has a 6-bit scale
//!   `sc` and minimum `m` packed in `scales`, value `d * sc * q - dmin * m`; `qs[32 i + l]`
//!   holds value `l` of sub-block `2i` (low nibble) and of `2i + 1` (high);
//! - `Q5_K`: `d, dmin, scales[12], qh[32], qs[128]` (176 bytes): as `Q4_K` with a fifth bit,
//!   bit `s` of `qh[l]` for value `l` of sub-block `s`;
//! - `Q6_K`: `ql[128], qh[64], scales[16], d` (210 bytes): 6-bit `q`, signed 8-bit scales
//!   per 16 values, value `d * sc * (q - 32)`.
//!
//! For the products, rows are regrouped by eight ([`pack`]). Per group and unit (a block,
//! or a super-block), the eight rows' scales come first (f16 `d`, and `m`, `dmin`, the
//! sub-block scales and minimums as bytes), then the codes of each 32-value sub-block in
//! loads of 32 bytes: load `c` holds bytes `4c..4c + 4` of each of the eight rows in turn,
//! so one load puts a row in each 32-bit lane and a dot-product instruction with four
//! activation bytes broadcast to every lane sums eight rows at once. 4-bit codes: four
//! loads whose low nibbles are values `4c..4c + 4` (chunk `c`) and high nibbles values
//! `16 + 4c..` (chunk `c + 4`); the fifth bit of `Q5_K` is one more load (bit `c` of a byte
//! belongs to chunk `c`), the two high bits of `Q6_K` two more (bits `2c, 2c + 1` of the
//! first for chunk `c < 4`, of the second for `c + 4`); 8-bit codes: eight loads. Padding
//! rows are zeros.

use half::f16;

/// Values per block (and per sub-block of the k-quants).
pub const QK: usize = 32;

/// Values per k-quant super-block.
pub const QK_K: usize = 256;

/// A quantized weight type the products read directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 4-bit, scale only (`d * (q - 8)`).
    Q4_0,
    /// 4-bit, scale and minimum (`d * q + m`).
    Q4_1,
    /// 8-bit signed, scale only (`d * q`).
    Q8_0,
    /// 4-bit k-quant (256 values, 6-bit sub-block scales and minimums).
    Q4K,
    /// 5-bit k-quant.
    Q5K,
    /// 6-bit k-quant (signed 8-bit scales per 16 values).
    Q6K,
}

impl QuantType {
    /// GGML's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// Values per block in the file.
    pub const fn block_values(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => QK,
            Self::Q4K | Self::Q5K | Self::Q6K => QK_K,
        }
    }

    /// Bytes per block in the file.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Sub-blocks of 32 per block.
    pub(crate) const fn subs(self) -> usize {
        self.block_values() / QK
    }

    /// Bytes of the scales at the head of a packed unit (eight rows).
    pub(crate) const fn head_bytes(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q8_0 => 2 * GROUP,
            Self::Q4_1 => 4 * GROUP,
            // d, dmin, then a scale and a minimum byte per sub-block and row.
            Self::Q4K | Self::Q5K => 4 * GROUP + 2 * 8 * GROUP,
            // d, then two signed scale bytes per sub-block and row.
            Self::Q6K => 2 * GROUP + 16 * GROUP,
        }
    }

    /// Bytes of the codes of one packed sub-block (eight rows x 32 values).
    pub(crate) const fn sub_bytes(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q4K => 128,
            Self::Q5K => 128 + 32,
            Self::Q6K => 128 + 64,
            Self::Q8_0 => 256,
        }
    }

    /// Bytes of one packed unit: eight rows by one block.
    pub(crate) const fn unit_bytes(self) -> usize {
        self.head_bytes() + self.subs() * self.sub_bytes()
    }
}

/// Rows per packed group.
pub(crate) const GROUP: usize = 8;

/// The f16 at `b[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Scale and minimum of sub-block `j` of a `Q4_K` / `Q5_K` block's `scales[12]`.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// One block of one row, decoded to its codes and scales.
struct Decoded {
    /// Per value: the code (unsigned 0..16, 0..32, 0..64; `Q8_0`: the signed byte's bits).
    q: [u8; QK_K],
    /// `d` (and `dmin` / `m` for the types that have one) as stored.
    d: f32,
    m: f32,
    /// Sub-block scales and minimums (k-quants; `Q6_K`: 16 signed scales).
    sc: [u8; 16],
    mins: [u8; 8],
}

fn decode(ty: QuantType, b: &[u8]) -> Decoded {
    let mut o = Decoded {
        q: [0; QK_K],
        d: 0.0,
        m: 0.0,
        sc: [0; 16],
        mins: [0; 8],
    };
    match ty {
        QuantType::Q4_0 | QuantType::Q4_1 => {
            o.d = f16_at(b, 0);
            let at = if ty == QuantType::Q4_1 {
                o.m = f16_at(b, 2);
                4
            } else {
                2
            };
            for j in 0..QK / 2 {
                o.q[j] = b[at + j] & 0x0f;
                o.q[j + QK / 2] = b[at + j] >> 4;
            }
        }
        QuantType::Q8_0 => {
            o.d = f16_at(b, 0);
            o.q[..QK].copy_from_slice(&b[2..2 + QK]);
        }
        QuantType::Q4K | QuantType::Q5K => {
            o.d = f16_at(b, 0);
            o.m = f16_at(b, 2);
            let scales = &b[4..16];
            let (qh, qs) = if ty == QuantType::Q5K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            for s in 0..8 {
                (o.sc[s], o.mins[s]) = scale_min_k4(s, scales);
                for l in 0..QK {
                    let byte = qs[32 * (s / 2) + l];
                    let mut q = if s % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                    if let Some(qh) = qh {
                        q |= ((qh[l] >> s) & 1) << 4;
                    }
                    o.q[QK * s + l] = q;
                }
            }
        }
        QuantType::Q6K => {
            let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
            o.d = f16_at(b, 208);
            o.sc.copy_from_slice(sc);
            for n in 0..2 {
                let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                for l in 0..QK {
                    let y = &mut o.q[128 * n..];
                    y[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                    y[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                    y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
        }
    }
    o
}

/// The values of a decoded block, in GGML's arithmetic order.
fn values(ty: QuantType, o: &Decoded, out: &mut [f32]) {
    match ty {
        QuantType::Q4_0 => {
            for (x, &q) in out.iter_mut().zip(&o.q[..QK]) {
                *x = (f32::from(q) - 8.0) * o.d;
            }
        }
        QuantType::Q4_1 => {
            for (x, &q) in out.iter_mut().zip(&o.q[..QK]) {
                *x = f32::from(q) * o.d + o.m;
            }
        }
        QuantType::Q8_0 => {
            for (x, &q) in out.iter_mut().zip(&o.q[..QK]) {
                *x = f32::from(q.cast_signed()) * o.d;
            }
        }
        QuantType::Q4K | QuantType::Q5K => {
            for s in 0..8 {
                let d = o.d * f32::from(o.sc[s]);
                let m = o.m * f32::from(o.mins[s]);
                for l in 0..QK {
                    out[QK * s + l] = d * f32::from(o.q[QK * s + l]) - m;
                }
            }
        }
        QuantType::Q6K => {
            for (i, x) in out.iter_mut().enumerate().take(QK_K) {
                let d = o.d * f32::from(o.sc[i / 16].cast_signed());
                *x = d * f32::from(i16::from(o.q[i]) - 32);
            }
        }
    }
}

/// Dequantizes whole blocks of `bytes` (the file's layout) into `out` (`out.len()` a
/// multiple of the block's values; the caller checked `bytes` holds that many).
pub(crate) fn dequantize(ty: QuantType, bytes: &[u8], out: &mut [f32]) {
    for (x, b) in out
        .chunks_exact_mut(ty.block_values())
        .zip(bytes.chunks_exact(ty.block_bytes()))
    {
        values(ty, &decode(ty, b), x);
    }
}

/// Regroups `rows` rows of `nb` blocks (`data`, the file's layout) into groups of eight
/// rows (the last padded with zero rows), as the module docs describe.
pub(crate) fn pack(ty: QuantType, rows: usize, nb: usize, data: &[u8]) -> Vec<u8> {
    let (bb, ub) = (ty.block_bytes(), ty.unit_bytes());
    let mut out = vec![0u8; rows.div_ceil(GROUP) * nb * ub];
    for r in 0..rows {
        let (g, j) = (r / GROUP, r % GROUP);
        for b in 0..nb {
            let o = decode(ty, &data[(r * nb + b) * bb..(r * nb + b + 1) * bb]);
            let unit = &mut out[(g * nb + b) * ub..(g * nb + b + 1) * ub];
            let (head, codes) = unit.split_at_mut(ty.head_bytes());
            let src = &data[(r * nb + b) * bb..];
            match ty {
                QuantType::Q4_0 | QuantType::Q8_0 => {
                    head[2 * j..2 * j + 2].copy_from_slice(&src[..2]);
                }
                QuantType::Q4_1 | QuantType::Q4K | QuantType::Q5K => {
                    head[2 * j..2 * j + 2].copy_from_slice(&src[..2]);
                    head[2 * GROUP + 2 * j..2 * GROUP + 2 * j + 2].copy_from_slice(&src[2..4]);
                    if ty != QuantType::Q4_1 {
                        for s in 0..8 {
                            head[4 * GROUP + s * GROUP + j] = o.sc[s];
                            head[4 * GROUP + 8 * GROUP + s * GROUP + j] = o.mins[s];
                        }
                    }
                }
                QuantType::Q6K => {
                    head[2 * j..2 * j + 2].copy_from_slice(&src[208..210]);
                    for s in 0..16 {
                        head[2 * GROUP + s * GROUP + j] = o.sc[s];
                    }
                }
            }
            for s in 0..ty.subs() {
                let q = &o.q[QK * s..QK * (s + 1)];
                let sub = &mut codes[s * ty.sub_bytes()..(s + 1) * ty.sub_bytes()];
                // Byte `t` of row `j`'s lane in load `c`.
                let at = |c: usize, t: usize| c * 32 + j * 4 + t;
                for t in 0..4 {
                    if ty == QuantType::Q8_0 {
                        for c in 0..8 {
                            sub[at(c, t)] = q[4 * c + t];
                        }
                        continue;
                    }
                    for c in 0..4 {
                        sub[at(c, t)] = (q[4 * c + t] & 0x0f) | ((q[16 + 4 * c + t] & 0x0f) << 4);
                    }
                    for c in 0..8 {
                        let hi = q[4 * c + t] >> 4;
                        match ty {
                            QuantType::Q5K => sub[at(4, t)] |= (hi & 1) << c,
                            QuantType::Q6K => sub[at(4 + c / 4, t)] |= (hi & 3) << (2 * (c % 4)),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    out
}

/// Row `r` (of `nb` blocks) of packed groups, dequantized into `out`.
pub(crate) fn dequantize_packed_row(
    ty: QuantType,
    nb: usize,
    packed: &[u8],
    r: usize,
    out: &mut [f32],
) {
    let ub = ty.unit_bytes();
    let (g, j) = (r / GROUP, r % GROUP);
    for b in 0..nb {
        let unit = &packed[(g * nb + b) * ub..(g * nb + b + 1) * ub];
        let (head, codes) = unit.split_at(ty.head_bytes());
        let mut o = Decoded {
            q: [0; QK_K],
            d: f16_at(head, 2 * j),
            m: 0.0,
            sc: [0; 16],
            mins: [0; 8],
        };
        match ty {
            QuantType::Q4_1 | QuantType::Q4K | QuantType::Q5K => {
                o.m = f16_at(head, 2 * GROUP + 2 * j);
                if ty != QuantType::Q4_1 {
                    for s in 0..8 {
                        o.sc[s] = head[4 * GROUP + s * GROUP + j];
                        o.mins[s] = head[4 * GROUP + 8 * GROUP + s * GROUP + j];
                    }
                }
            }
            QuantType::Q6K => {
                for s in 0..16 {
                    o.sc[s] = head[2 * GROUP + s * GROUP + j];
                }
            }
            QuantType::Q4_0 | QuantType::Q8_0 => {}
        }
        for s in 0..ty.subs() {
            let sub = &codes[s * ty.sub_bytes()..(s + 1) * ty.sub_bytes()];
            let at = |c: usize, t: usize| c * 32 + j * 4 + t;
            for t in 0..4 {
                for c in 0..8 {
                    let q = if ty == QuantType::Q8_0 {
                        sub[at(c, t)]
                    } else {
                        let byte = sub[at(c % 4, t)];
                        let lo = if c < 4 { byte & 0x0f } else { byte >> 4 };
                        match ty {
                            QuantType::Q5K => lo | (((sub[at(4, t)] >> c) & 1) << 4),
                            QuantType::Q6K => {
                                lo | (((sub[at(4 + c / 4, t)] >> (2 * (c % 4))) & 3) << 4)
                            }
                            _ => lo,
                        }
                    };
                    o.q[QK * s + 4 * c + t] = q;
                }
            }
        }
        let bv = ty.block_values();
        values(ty, &o, &mut out[b * bv..(b + 1) * bv]);
    }
}

/// One block of an activation row quantized to int8: value `d * q[j]`, `qsum = sum(q)` and
/// `s = d * qsum` (the terms the asymmetric and offset weight types need).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub(crate) struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qsum: i32,
    /// Sum of the first 16 codes (`Q6_K` scales halves of a block apart).
    pub qsum_lo: i32,
    pub q: [i8; QK],
}

impl ActBlock {
    /// A block holding a non-finite value: NaN scale and sum, so the product is NaN.
    pub(crate) const NON_FINITE: Self = Self {
        d: f32::NAN,
        s: f32::NAN,
        qsum: 0,
        qsum_lo: 0,
        q: [0; QK],
    };

    /// Sets the scale and the code sums (the codes are written by the caller).
    #[inline(always)]
    pub(crate) fn finish(&mut self, d: f32, lo: i32, hi: i32) {
        self.d = d;
        self.qsum = lo + hi;
        self.qsum_lo = lo;
        #[allow(clippy::cast_precision_loss)] // |sum| <= 32 * 127
        {
            self.s = d * (lo + hi) as f32;
        }
    }
}

/// The scale of a block whose largest magnitude is `amax` (finite) and its inverse, as
/// GGML computes them: `d = amax / 127`, `1 / d`. A block whose scale is subnormal
/// (|x| < ~1e-36) has no finite inverse: it quantizes to zeros with scale 0 (0 x inf is
/// NaN).
#[inline(always)]
pub(crate) fn act_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    match 1.0 / d {
        inv if d > 0.0 && inv.is_finite() => (d, inv),
        _ => (0.0, 0.0),
    }
}

/// Quantizes one block of [`QK`] activations: `d = max|x| / 127`, each value rounded to
/// the nearest multiple of `d` (ties to even). A block of zeros gets `d = 0`; a block
/// holding a non-finite value is [`ActBlock::NON_FINITE`]. The definition every path's
/// quantizer (`QLanes::quantize_block`) must equal bit for bit.
#[inline(always)]
pub(crate) fn quantize_block(xs: &[f32], b: &mut ActBlock) {
    // Round to nearest (ties to even) by adding and subtracting 1.5 * 2^23 (`f32::round`
    // is a library call without SSE4.1).
    const MAGIC: f32 = 12_582_912.0;
    // Lane-wise maxima, checks and sums over eight lanes, reduced once.
    const L: usize = 8;
    let xs = &xs[..QK];
    let (mut lane_max, mut lane_bad) = ([0.0f32; L], [false; L]);
    for c in xs.chunks_exact(L) {
        for j in 0..L {
            lane_max[j] = lane_max[j].max(c[j].abs());
            lane_bad[j] |= !c[j].is_finite();
        }
    }
    if lane_bad.iter().any(|&b| b) {
        *b = ActBlock::NON_FINITE;
        return;
    }
    let amax = lane_max.iter().fold(0.0f32, |m, &v| m.max(v));
    let (d, inv) = act_scale(amax);
    // The codes as f32 (whole numbers), summed per lane: exact, |sum| <= 32 x 127.
    let mut r = [0.0f32; QK];
    for (r, &v) in r.iter_mut().zip(xs) {
        *r = ((v * inv + MAGIC) - MAGIC).clamp(-127.0, 127.0);
    }
    let mut half_sums = [[0.0f32; L]; 2];
    for (h, half) in half_sums.iter_mut().zip(r.chunks_exact(QK / 2)) {
        for c in half.chunks_exact(L) {
            for j in 0..L {
                h[j] += c[j];
            }
        }
    }
    // Whole numbers of magnitude <= 16 x 127: the casts are exact.
    #[allow(clippy::cast_possible_truncation)]
    let [lo, hi] = half_sums.map(|h| h.iter().sum::<f32>() as i32);
    for (o, &v) in b.q.iter_mut().zip(&r) {
        // SAFETY: `v` is finite (the block was checked and `inv` is finite) and a whole
        // number in [-127, 127].
        *o = unsafe { v.to_int_unchecked::<i8>() };
    }
    b.finish(d, lo, hi);
}
