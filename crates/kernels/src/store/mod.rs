//! K/V storage: what a token's K/V are and how a store arranges them (`shape.rs`), the
//! element types (`dtype.rs`) and typed buffers (`buffer.rs`), the paged cache
//! (`cache.rs`), the contiguous baseline arena (`contiguous.rs`), and the one interface a
//! forward pass uses for either (`backend.rs`).

pub(crate) mod backend;
pub(crate) mod buffer;
pub(crate) mod cache;
pub(crate) mod contiguous;
pub(crate) mod dtype;
pub(crate) mod shape;
