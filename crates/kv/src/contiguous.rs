//! The contiguous baseline: one run of slots per sequence, reserved at admission.
//!
//! This is how a serving system without paging stores KV (FasterTransformer, Orca): each
//! request gets one contiguous region sized up front, because a tensor per sequence cannot
//! grow in place. The [`ContiguousSizing`] says how large:
//! - `Max`: the maximum sequence length (Orca-Max);
//! - `Pow2`: the next power of two of the final length (Orca-Pow2);
//! - `Oracle`: exactly the final length, as if every output length were known in advance.
//!
//! Free space is kept as address-ordered runs, allocation is first-fit, and freeing
//! coalesces neighbours, so external fragmentation is real: a request can fail although
//! enough slots are free in total. Reserved-but-unused slots (internal fragmentation) and
//! free-but-unusable slots (external fragmentation) are reported separately.

use crate::config::KvConfig;
use crate::error::{KvError, Result};
use crate::ids::SeqId;
use crate::stats::ratio;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How many slots a sequence reserves at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContiguousSizing {
    /// The maximum sequence length, whatever the sequence.
    Max,
    /// The next power of two of the final length.
    Pow2,
    /// Exactly the final length (prompt + max_tokens: exact when output is forced to
    /// max_tokens, as in benchmarks).
    Oracle,
}

impl ContiguousSizing {
    /// Slots reserved for a sequence that will end at `final_len` tokens, where no sequence
    /// is longer than `max_len`.
    pub fn slots_for(self, final_len: usize, max_len: usize) -> usize {
        match self {
            Self::Max => max_len,
            Self::Pow2 => final_len.max(1).next_power_of_two(),
            Self::Oracle => final_len.max(1),
        }
    }
}

/// One sequence's run: slots `start .. start + len`, of which `used` hold tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// First slot.
    pub start: usize,
    /// Slots reserved.
    pub len: usize,
    /// Slots holding tokens (from `start`).
    pub used: usize,
}

/// Counters of the contiguous allocator, O(1) to read.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContiguousStats {
    /// Slots in the arena.
    pub total_slots: usize,
    /// Slots in no reservation.
    pub free_slots: usize,
    /// Slots in reservations.
    pub reserved_slots: usize,
    /// Slots holding tokens.
    pub tokens_stored: usize,
    /// Sequences holding a reservation.
    pub num_sequences: usize,
    /// `tokens_stored / reserved_slots`; 1.0 when nothing is reserved.
    pub utilization: f64,
    /// Highest `reserved_slots` seen.
    pub peak_reserved_slots: usize,
    /// Reservations made.
    pub allocations: u64,
    /// Reservations released.
    pub frees: u64,
    /// Reserved slots not holding tokens (internal fragmentation).
    pub internal_fragmentation_slots: usize,
    /// Free slots outside the largest free run: free, but no request larger than the
    /// other runs can use them (external fragmentation).
    pub external_fragmentation_slots: usize,
    /// Longest run of free slots.
    pub largest_free_run: usize,
    /// Number of free runs.
    pub free_runs: usize,
    /// Reservations refused although enough slots were free in total.
    pub fragmentation_failures: u64,
    /// Bytes of K and V the arena stands for.
    pub kv_bytes: u64,
    /// Bytes of bookkeeping.
    pub metadata_bytes: u64,
    /// `metadata_bytes / kv_bytes`.
    pub metadata_overhead: f64,
}

/// First-fit arena of KV slots, one contiguous run per sequence.
#[derive(Clone, Debug)]
pub struct ContiguousAllocator {
    capacity: usize,
    sizing: ContiguousSizing,
    max_len: usize,
    kv_bytes_per_token: u64,
    /// Free runs by start slot -> length. Neighbouring runs are always merged.
    runs: BTreeMap<usize, usize>,
    /// The same runs by (length, start), for the largest one.
    by_len: BTreeSet<(usize, usize)>,
    seqs: FxHashMap<SeqId, Reservation>,
    free_slots: usize,
    tokens: usize,
    peak_reserved: usize,
    allocations: u64,
    frees: u64,
    fragmentation_failures: u64,
}

impl ContiguousAllocator {
    /// An arena of `capacity` slots, each `kv_bytes_per_token` bytes of K and V, whose
    /// sequences reserve by `sizing` and are at most `max_len` tokens long.
    pub fn new(
        capacity: usize,
        sizing: ContiguousSizing,
        max_len: usize,
        kv_bytes_per_token: u64,
    ) -> Result<Self> {
        if capacity == 0 {
            return Err(KvError::InvalidConfig(
                "capacity must be at least 1 slot".into(),
            ));
        }
        if max_len == 0 {
            return Err(KvError::InvalidConfig(
                "max length must be at least 1".into(),
            ));
        }
        if kv_bytes_per_token.checked_mul(capacity as u64).is_none() {
            return Err(KvError::InvalidConfig(
                "total KV bytes overflow 64 bits".into(),
            ));
        }
        let mut a = Self {
            capacity,
            sizing,
            max_len,
            kv_bytes_per_token,
            runs: BTreeMap::new(),
            by_len: BTreeSet::new(),
            seqs: FxHashMap::default(),
            free_slots: capacity,
            tokens: 0,
            peak_reserved: 0,
            allocations: 0,
            frees: 0,
            fragmentation_failures: 0,
        };
        a.insert_run(0, capacity);
        Ok(a)
    }

    /// An arena with the same token capacity and byte accounting as a block pool.
    pub fn from_config(
        config: &KvConfig,
        sizing: ContiguousSizing,
        max_len: usize,
    ) -> Result<Self> {
        config.validate()?;
        Self::new(
            config.num_blocks * config.block_size,
            sizing,
            max_len,
            config.bytes_per_token,
        )
    }

    /// How sequences reserve.
    pub fn sizing(&self) -> ContiguousSizing {
        self.sizing
    }

    /// Slots a sequence ending at `final_len` tokens reserves.
    pub fn slots_for(&self, final_len: usize) -> usize {
        self.sizing.slots_for(final_len, self.max_len)
    }

    /// Slots in the arena.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Longest run of free slots.
    pub fn largest_free_run(&self) -> usize {
        self.by_len.last().map_or(0, |&(len, _)| len)
    }

    /// Whether a sequence ending at `final_len` tokens could be admitted now.
    pub fn can_reserve(&self, final_len: usize) -> bool {
        self.slots_for(final_len) <= self.largest_free_run()
    }

    /// The reservation of `seq`.
    pub fn get(&self, seq: SeqId) -> Result<Reservation> {
        self.seqs
            .get(&seq)
            .copied()
            .ok_or(KvError::UnknownSequence(seq))
    }

    /// All reservations, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (SeqId, Reservation)> + '_ {
        self.seqs.iter().map(|(k, v)| (*k, *v))
    }

    fn insert_run(&mut self, start: usize, len: usize) {
        self.runs.insert(start, len);
        self.by_len.insert((len, start));
    }

    fn remove_run(&mut self, start: usize) -> usize {
        let len = self.runs.remove(&start).expect("run exists");
        self.by_len.remove(&(len, start));
        len
    }

    /// Reserves a run for `seq`, which will end at `final_len` tokens (prompt + output),
    /// sized by [`ContiguousAllocator::slots_for`]; first fit in address order.
    pub fn reserve(&mut self, seq: SeqId, final_len: usize) -> Result<Reservation> {
        if self.seqs.contains_key(&seq) {
            return Err(KvError::SequenceExists(seq));
        }
        let need = self.slots_for(final_len);
        let Some((&start, &len)) = self.runs.iter().find(|(_, &len)| len >= need) else {
            if need <= self.free_slots {
                self.fragmentation_failures += 1;
            }
            return Err(KvError::OutOfSlots {
                requested: need,
                largest_free_run: self.largest_free_run(),
                free: self.free_slots,
            });
        };
        self.remove_run(start);
        if len > need {
            self.insert_run(start + need, len - need);
        }
        self.free_slots -= need;
        self.allocations += 1;
        self.peak_reserved = self.peak_reserved.max(self.capacity - self.free_slots);
        let r = Reservation {
            start,
            len: need,
            used: 0,
        };
        self.seqs.insert(seq, r);
        Ok(r)
    }

    /// Records `n` more tokens of `seq` in its run; they must fit the reservation.
    pub fn append(&mut self, seq: SeqId, n: usize) -> Result<Reservation> {
        let r = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let requested = r.used + n;
        if requested > r.len {
            return Err(KvError::ReservationExceeded {
                seq,
                reserved: r.len,
                requested,
            });
        }
        r.used = requested;
        self.tokens += n;
        Ok(*r)
    }

    /// Releases `seq`'s run, merging it with free neighbours.
    pub fn free(&mut self, seq: SeqId) -> Result<Reservation> {
        let r = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        self.tokens -= r.used;
        self.free_slots += r.len;
        self.frees += 1;
        let (mut start, mut len) = (r.start, r.len);
        if let Some((&ps, &pl)) = self.runs.range(..start).next_back() {
            if ps + pl == start {
                self.remove_run(ps);
                start = ps;
                len += pl;
            }
        }
        if self.runs.contains_key(&(start + len)) {
            len += self.remove_run(start + len);
        }
        self.insert_run(start, len);
        Ok(r)
    }

    /// A snapshot of the counters. O(1) (plus one O(log runs) read of the largest run).
    pub fn stats(&self) -> ContiguousStats {
        let reserved = self.capacity - self.free_slots;
        let largest = self.largest_free_run();
        let kv_bytes = self.kv_bytes_per_token * self.capacity as u64;
        let metadata_bytes = self.metadata_bytes();
        ContiguousStats {
            total_slots: self.capacity,
            free_slots: self.free_slots,
            reserved_slots: reserved,
            tokens_stored: self.tokens,
            num_sequences: self.seqs.len(),
            utilization: ratio(self.tokens as f64, reserved as f64, 1.0),
            peak_reserved_slots: self.peak_reserved,
            allocations: self.allocations,
            frees: self.frees,
            internal_fragmentation_slots: reserved - self.tokens,
            external_fragmentation_slots: self.free_slots - largest,
            largest_free_run: largest,
            free_runs: self.runs.len(),
            fragmentation_failures: self.fragmentation_failures,
            kv_bytes,
            metadata_bytes,
            metadata_overhead: ratio(metadata_bytes as f64, kv_bytes as f64, 0.0),
        }
    }

    /// Bytes of bookkeeping (B-tree nodes estimated per entry).
    pub fn metadata_bytes(&self) -> u64 {
        let run = 2 * std::mem::size_of::<usize>();
        (std::mem::size_of::<Self>()
            + self.runs.len() * run
            + self.by_len.len() * run
            + self.seqs.capacity() * (std::mem::size_of::<(SeqId, Reservation)>() + 1))
            as u64
    }

    /// Recounts everything: runs and reservations tile the arena exactly, no two free
    /// runs touch, both run indexes agree, counters match.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut spans: Vec<(usize, usize, bool)> = self
            .runs
            .iter()
            .map(|(&s, &l)| (s, l, true))
            .chain(self.seqs.values().map(|r| (r.start, r.len, false)))
            .collect();
        spans.sort_unstable();
        let mut at = 0;
        let mut prev_free = false;
        for &(s, l, is_free) in &spans {
            if s != at {
                return Err(format!("slot {at}: expected a span, found one at {s}"));
            }
            if l == 0 {
                return Err(format!("empty span at {s}"));
            }
            if is_free && prev_free {
                return Err(format!("free runs touch at {s}"));
            }
            prev_free = is_free;
            at = s + l;
        }
        if at != self.capacity {
            return Err(format!("spans end at {at}, capacity {}", self.capacity));
        }
        let by_len: BTreeSet<_> = self.runs.iter().map(|(&s, &l)| (l, s)).collect();
        if by_len != self.by_len {
            return Err("run indexes disagree".into());
        }
        let free: usize = self.runs.values().sum();
        let tokens: usize = self.seqs.values().map(|r| r.used).sum();
        if free != self.free_slots || tokens != self.tokens {
            return Err(format!(
                "counters: free {} (recount {free}), tokens {} (recount {tokens})",
                self.free_slots, self.tokens
            ));
        }
        if self.seqs.values().any(|r| r.used > r.len) {
            return Err("a reservation holds more tokens than slots".into());
        }
        Ok(())
    }
}
