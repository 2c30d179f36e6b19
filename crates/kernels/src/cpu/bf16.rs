//! The AVX-512 BF16 token: what the bf16 products (`products/bf16.rs`) hold to run
//! `vdpbf16ps`.

/// Token for AVX-512F/BW/VL + BF16. Created only in its entry (`cpu/entry.rs`), which is
/// compiled with those features and entered only for a [`crate::Cpu`] with BF16; every
/// `unsafe` of the bf16 products relies on that.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Dot(());

impl Bf16Dot {
    /// The token.
    ///
    /// # Safety
    /// The CPU must have AVX-512F/BW/VL and AVX-512 BF16, and the caller must be a
    /// `#[target_feature]` entry with those features, so that the code it runs with the token
    /// is compiled with them.
    pub(crate) const unsafe fn new() -> Self {
        Self(())
    }
}
