//! The step description: what one forward pass computes, as plain data. The engine builds a
//! [`Batch`] from its scheduler's decisions and its KV policy's addresses; an executor (the
//! model, or a cost model) consumes it. It holds no tensors: token ids, cache slots, and per
//! sequence a [`SeqSpec`] whose `kv` is a [`KvLocation`] — the metadata vLLM hands its
//! attention backend (`query_start_loc`, `seq_lens`, block tables, `slot_mapping`).
//!
//! # Invariants (kept by [`Batch::push`], the only way to add a sequence)
//! - Sequences' query rows are consecutive and in order: sequence `i`'s `query_start` is the
//!   sum of the earlier `query_len`s, and `tokens`, `positions` and `slots` have one entry
//!   per query row.
//! - Every sequence has at least one new token; `context_len` is its position after them.
//! - Every location is of the batch's kind (paged with the batch's block size, or
//!   contiguous), a paged table covers the whole context, and each slot is where the
//!   location puts that position.

use crate::attention::spec::SeqSpec;
use crate::error::{KernelError, Result};
use pagedattn_kv::{BlockId, TokenId};

/// Where a sequence's K/V live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLocation<'a> {
    /// Paged: the sequence's block table (logical block `i` -> physical block).
    Paged(&'a [BlockId]),
    /// Contiguous: the arena slot holding the sequence's position 0.
    Contiguous {
        /// First slot of the sequence's run.
        start_slot: usize,
    },
}

impl KvLocation<'_> {
    /// The cache slot of token position `pos` (`block_size` is the paged cache's; the
    /// contiguous arena ignores it). `None` if a paged table does not reach `pos`.
    #[inline]
    pub fn slot(&self, pos: usize, block_size: usize) -> Option<usize> {
        match *self {
            Self::Paged(table) => table
                .get(pos / block_size)
                .map(|b| b.index() * block_size + pos % block_size),
            Self::Contiguous { start_slot } => start_slot.checked_add(pos),
        }
    }
}

/// Which positions of a sequence need logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsFor {
    /// None (a prefill chunk that does not end the prompt).
    None,
    /// The last new token only (the usual case: its logits pick the next token).
    #[default]
    Last,
    /// Every new token (tests and scoring).
    All,
}

/// A flattened batch: sequences' new tokens laid end to end, prefill and decode mixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    /// Tokens per block when paged; `None` for a contiguous batch.
    block_size: Option<usize>,
    tokens: Vec<TokenId>,
    positions: Vec<usize>,
    slots: Vec<usize>,
    seqs: Vec<SeqSpec<KvLocation<'a>>>,
    logits: Vec<LogitsFor>,
}

impl<'a> Batch<'a> {
    /// An empty batch over a paged cache of `block_size`-token blocks.
    pub fn paged(block_size: usize) -> Self {
        Self::empty(Some(block_size.max(1)))
    }

    /// An empty batch over a contiguous arena.
    pub fn contiguous() -> Self {
        Self::empty(None)
    }

    fn empty(block_size: Option<usize>) -> Self {
        Self {
            block_size,
            tokens: Vec::new(),
            positions: Vec::new(),
            slots: Vec::new(),
            seqs: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Adds a sequence whose `new_tokens` take positions `start_pos ..`, its K/V at `kv`;
    /// their cache slots follow from `kv`. On error the batch is unchanged.
    pub fn push(
        &mut self,
        new_tokens: &[TokenId],
        start_pos: usize,
        kv: KvLocation<'a>,
        logits: LogitsFor,
    ) -> Result<&mut Self> {
        let seq = self.seqs.len();
        let bad = |reason: String| KernelError::InvalidSequence { seq, reason };
        if new_tokens.is_empty() {
            return Err(bad("a sequence needs at least one new token".into()));
        }
        let context_len = start_pos
            .checked_add(new_tokens.len())
            .ok_or_else(|| bad("positions overflow".into()))?;
        let block_size = match (self.block_size, kv) {
            (Some(bs), KvLocation::Paged(table)) => {
                let needed = context_len.div_ceil(bs);
                if table.len() < needed {
                    return Err(KernelError::TableTooShort {
                        seq,
                        context_len,
                        needed,
                        have: table.len(),
                    });
                }
                bs
            }
            (None, KvLocation::Contiguous { start_slot }) => {
                if start_slot.checked_add(context_len).is_none() {
                    return Err(bad("slots overflow".into()));
                }
                1
            }
            (Some(_), KvLocation::Contiguous { .. }) => {
                return Err(bad("a paged batch needs a paged location".into()))
            }
            (None, KvLocation::Paged(_)) => {
                return Err(bad("a contiguous batch needs a contiguous location".into()))
            }
        };
        // Checked above: every position below `context_len` has a slot.
        let slots = (start_pos..context_len).filter_map(|p| kv.slot(p, block_size));
        self.slots.extend(slots);
        self.positions.extend(start_pos..context_len);
        self.seqs.push(SeqSpec {
            query_start: self.tokens.len(),
            query_len: new_tokens.len(),
            context_len,
            kv,
        });
        self.tokens.extend_from_slice(new_tokens);
        self.logits.push(logits);
        Ok(self)
    }

    /// The sequences, in the order their logits rows are returned.
    pub fn seqs(&self) -> &[SeqSpec<KvLocation<'a>>] {
        &self.seqs
    }

    /// Which logits each sequence needs (parallel to [`Batch::seqs`]).
    pub fn logits(&self) -> &[LogitsFor] {
        &self.logits
    }

    /// Every new token, sequences end to end.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Each new token's position in its sequence.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Each new token's cache slot.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    /// Tokens per block of a paged batch; `None` for a contiguous one.
    pub fn block_size(&self) -> Option<usize> {
        self.block_size
    }

    /// Total new tokens.
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the batch has no sequence.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Rows of logits the batch asks for.
    pub fn num_logits_rows(&self) -> usize {
        self.seqs
            .iter()
            .zip(&self.logits)
            .map(|(s, l)| match l {
                LogitsFor::None => 0,
                LogitsFor::Last => 1,
                LogitsFor::All => s.query_len,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, KvLocation, LogitsFor};
    use crate::KernelError;
    use pagedattn_kv::BlockId;

    #[test]
    fn rows_slots_and_positions_follow_the_locations() {
        let table = [BlockId(3), BlockId(1)];
        let mut b = Batch::paged(4);
        b.push(&[7, 8], 3, KvLocation::Paged(&table), LogitsFor::Last)
            .unwrap()
            .push(&[9], 0, KvLocation::Paged(&table), LogitsFor::All)
            .unwrap();
        assert_eq!(b.tokens(), &[7, 8, 9]);
        assert_eq!(b.positions(), &[3, 4, 0]);
        // Position 3 is block 0 (physical 3) offset 3; position 4 is block 1 (physical 1).
        assert_eq!(b.slots(), &[15, 4, 12]);
        let starts: Vec<_> = b
            .seqs()
            .iter()
            .map(|s| (s.query_start, s.context_len))
            .collect();
        assert_eq!(starts, [(0, 5), (2, 1)]);
        assert_eq!(b.num_logits_rows(), 2);

        let mut c = Batch::contiguous();
        c.push(
            &[1, 2, 3],
            5,
            KvLocation::Contiguous { start_slot: 100 },
            LogitsFor::All,
        )
        .unwrap();
        assert_eq!(c.slots(), &[105, 106, 107]);
        assert_eq!(c.num_logits_rows(), 3);
    }

    #[test]
    fn bad_sequences_are_refused_and_change_nothing() {
        let table = [BlockId(0)];
        let mut b = Batch::paged(4);
        let before = b.clone();
        // A context of 5 needs two blocks.
        assert!(matches!(
            b.push(&[1], 4, KvLocation::Paged(&table), LogitsFor::Last),
            Err(KernelError::TableTooShort {
                needed: 2,
                have: 1,
                ..
            })
        ));
        assert!(b
            .push(&[], 0, KvLocation::Paged(&table), LogitsFor::Last)
            .is_err());
        assert!(b
            .push(
                &[1],
                0,
                KvLocation::Contiguous { start_slot: 0 },
                LogitsFor::Last
            )
            .is_err());
        assert!(b
            .push(&[1], usize::MAX, KvLocation::Paged(&table), LogitsFor::Last)
            .is_err());
        let mut c = Batch::contiguous();
        assert!(c
            .push(&[1], 0, KvLocation::Paged(&table), LogitsFor::Last)
            .is_err());
        assert!(c
            .push(
                &[1, 2],
                0,
                KvLocation::Contiguous {
                    start_slot: usize::MAX
                },
                LogitsFor::Last
            )
            .is_err());
        assert_eq!(b, before);
        assert!(c.is_empty());
    }
}
