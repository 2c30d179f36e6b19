//! Typed element buffers shared by the paged and the contiguous stores: one page-aligned
//! array of the storage type, written from f32 rows and read by the kernels as a typed
//! slice.

use crate::store::dtype::{DType, KvElem};
use half::{bf16, f16};

/// Alignment of the first element. With a page-aligned base, a tile (a multiple of 4 KiB
/// for the usual shapes) covers whole pages and whole cache lines: no vector load straddles
/// two lines and no tile touches an extra page (an extra TLB walk per random block).
const ALIGN: usize = 4096;

/// A zero-initialised array whose first element is `ALIGN`-aligned (a `Vec` with slack in
/// front; it never reallocates, so the offset stays valid).
#[derive(Debug)]
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

/// A zeroed vector whose memory was offered huge pages before its first write (see
/// [`advise_huge_pages`]). Allocated zeroed, so a large one is fresh zero pages that become
/// resident only where written, as with `vec![0.0; len]`.
pub(crate) fn zeroed_on_huge_pages<T: bytemuck::Zeroable + Copy>(len: usize) -> Vec<T> {
    let mut buf = bytemuck::allocation::zeroed_vec::<T>(len);
    advise_huge_pages(&mut buf);
    buf
}

/// Asks Linux to back `mem` with transparent huge pages (2 MiB) where it covers whole ones.
/// K/V blocks and weight panels are read in 2-8 KiB pieces scattered over hundreds of MiB:
/// with 4 KiB pages nearly every piece costs a TLB miss and a page walk that the
/// contiguous baseline's sequential reads mostly avoid. Advisory: where the system has huge
/// pages disabled, or on other systems, nothing changes. `PAGEDATTN_HUGE_PAGES=0` turns the
/// advice off (for comparisons).
fn advise_huge_pages<T>(mem: &mut [T]) {
    #[cfg(target_os = "linux")]
    if std::env::var_os("PAGEDATTN_HUGE_PAGES").is_none_or(|v| v != "0") {
        const HUGE: usize = 2 << 20;
        let begin = (mem.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (mem.as_ptr() as usize + std::mem::size_of_val(mem)) / HUGE * HUGE;
        if end > begin {
            // SAFETY: the range lies inside `mem`, memory this process owns; MADV_HUGEPAGE
            // only changes how page faults are served (and may merge pages later), never the
            // contents or the mapping's validity. A failure (e.g. THP compiled out) is
            // ignored: the advice is optional.
            unsafe {
                libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mem;
}

impl<T: bytemuck::Zeroable + Copy> Aligned<T> {
    fn zeroed(len: usize) -> Self {
        let size = std::mem::size_of::<T>();
        let buf = zeroed_on_huge_pages(len + ALIGN / size);
        let addr = buf.as_ptr() as usize;
        let start = (addr.next_multiple_of(ALIGN) - addr) / size;
        Self { buf, start, len }
    }

    fn as_slice(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

impl<T: bytemuck::Zeroable + Copy> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        let mut c = Self::zeroed(self.len);
        c.as_mut_slice().copy_from_slice(self.as_slice());
        c
    }
}

/// One K or V array of a layer, in its storage type.
#[derive(Clone, Debug)]
pub(crate) enum KvBuffer {
    F32(Aligned<f32>),
    F16(Aligned<f16>),
    Bf16(Aligned<bf16>),
}

/// A borrowed [`KvBuffer`], what the kernels dispatch on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KvView<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl KvBuffer {
    /// A zeroed K and V buffer of `len` elements for each of `num_layers` layers.
    pub(crate) fn zeroed_layers(num_layers: usize, dtype: DType, len: usize) -> Vec<(Self, Self)> {
        (0..num_layers)
            .map(|_| (Self::zeros(dtype, len), Self::zeros(dtype, len)))
            .collect()
    }

    pub(crate) fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F32 => Self::F32(Aligned::zeroed(len)),
            DType::F16 => Self::F16(Aligned::zeroed(len)),
            DType::Bf16 => Self::Bf16(Aligned::zeroed(len)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(b) => b.len,
            Self::F16(b) => b.len,
            Self::Bf16(b) => b.len,
        }
    }

    pub(crate) fn view(&self) -> KvView<'_> {
        match self {
            Self::F32(b) => KvView::F32(b.as_slice()),
            Self::F16(b) => KvView::F16(b.as_slice()),
            Self::Bf16(b) => KvView::Bf16(b.as_slice()),
        }
    }

    /// Stores `src` (rounded to the storage type) at `dst_offset`. The caller has checked
    /// that the range is inside the buffer.
    pub(crate) fn write(&mut self, dst_offset: usize, src: &[f32]) {
        fn put<T: KvElem>(dst: &mut [T], src: &[f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = T::from_f32(s);
            }
        }
        let range = dst_offset..dst_offset + src.len();
        match self {
            Self::F32(b) => b.as_mut_slice()[range].copy_from_slice(src),
            Self::F16(b) => put(&mut b.as_mut_slice()[range], src),
            Self::Bf16(b) => put(&mut b.as_mut_slice()[range], src),
        }
    }

    /// Copies `len` elements from `src` to `dst` inside the buffer (ranges checked by the
    /// caller; they may not overlap because they are different blocks).
    pub(crate) fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        match self {
            Self::F32(b) => b.as_mut_slice().copy_within(src..src + len, dst),
            Self::F16(b) => b.as_mut_slice().copy_within(src..src + len, dst),
            Self::Bf16(b) => b.as_mut_slice().copy_within(src..src + len, dst),
        }
    }

    /// Reads `len` elements at `offset` widened to f32 (tests and the padded copy).
    pub(crate) fn read(&self, offset: usize, len: usize) -> Vec<f32> {
        let range = offset..offset + len;
        match self {
            Self::F32(b) => b.as_slice()[range].to_vec(),
            Self::F16(b) => b.as_slice()[range].iter().map(|x| x.to_f32()).collect(),
            Self::Bf16(b) => b.as_slice()[range].iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// Validates a scatter of `slot_mapping.len()` rows of `row` elements into a store of
/// `capacity` slots: K and V lengths first, then every slot in range. Both stores' `write_kv`
/// call this before writing anything, so a failed write changes nothing.
pub(crate) fn check_write(
    slot_mapping: &[usize],
    capacity: usize,
    row: usize,
    k: &[f32],
    v: &[f32],
) -> crate::Result<()> {
    check_rows(slot_mapping.len(), row, k, v)?;
    match slot_mapping.iter().find(|&&s| s >= capacity) {
        Some(&slot) => Err(crate::KernelError::SlotOutOfRange { slot, capacity }),
        None => Ok(()),
    }
}

/// Checks the common arguments of a `write_kv` call: equal K and V lengths and one
/// `[num_kv_heads, head_dim]` row per slot.
pub(crate) fn check_rows(slots: usize, row: usize, k: &[f32], v: &[f32]) -> crate::Result<()> {
    let expected = slots * row;
    if k.len() != expected {
        return Err(crate::KernelError::LengthMismatch {
            what: "k",
            expected,
            actual: k.len(),
        });
    }
    if v.len() != expected {
        return Err(crate::KernelError::LengthMismatch {
            what: "v",
            expected,
            actual: v.len(),
        });
    }
    Ok(())
}
