//! Model-based property test of the block manager: random sequences of operations, valid
//! and invalid, run against the manager and a plain reference model (each sequence's
//! token list) plus a simulated data layer that stores tokens in block slots exactly as
//! the KV cache stores K/V. After every step: the invariants hold, every sequence reads
//! back its own tokens through its block table (so a prefix hit or a copy-on-write never
//! hands a sequence another one's data), and a failed call changed nothing. At the end,
//! freeing everything returns every block.

use pagedattn_kv::{BlockId, BlockManager, KvConfig, KvError, SeqId};
use proptest::prelude::*;
use std::collections::BTreeMap;

const BS: usize = 4;
const BLOCKS: usize = 14;
const SEQS: u64 = 6;

#[derive(Clone, Debug)]
enum Op {
    Add(u64),
    AddWithPrefix {
        seq: u64,
        template: usize,
        len: usize,
    },
    Allocate {
        seq: u64,
        n: usize,
    },
    Append {
        seq: u64,
        n: usize,
        diverge: bool,
    },
    Fork {
        parent: u64,
        child: u64,
    },
    FreeLast(u64),
    FreeAny {
        seq: u64,
        block: u32,
    },
    FreeSeq(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let seq = 0..SEQS;
    prop_oneof![
        seq.clone().prop_map(Op::Add),
        (seq.clone(), 0..3usize, 0..30usize).prop_map(|(seq, template, len)| Op::AddWithPrefix {
            seq,
            template,
            len
        }),
        (seq.clone(), 0..4usize).prop_map(|(seq, n)| Op::Allocate { seq, n }),
        (seq.clone(), 0..9usize, proptest::bool::weighted(0.2))
            .prop_map(|(seq, n, diverge)| Op::Append { seq, n, diverge }),
        (seq.clone(), seq.clone()).prop_map(|(parent, child)| Op::Fork { parent, child }),
        seq.clone().prop_map(Op::FreeLast),
        (seq.clone(), 0..(BLOCKS as u32 + 2)).prop_map(|(seq, block)| Op::FreeAny { seq, block }),
        seq.prop_map(Op::FreeSeq),
    ]
}

/// Token at position `pos` of template `t`: templates share nothing, so prefixes repeat
/// only between sequences of the same template.
fn template_token(t: usize, pos: usize) -> u32 {
    (t * 1000 + pos) as u32
}

struct Harness {
    m: BlockManager,
    /// Reference model: each sequence's tokens and template.
    seqs: BTreeMap<u64, (Vec<u32>, usize)>,
    /// Simulated data layer: token written in each slot.
    data: Vec<u32>,
    fresh: u32,
}

impl Harness {
    fn snapshot(&self) -> String {
        let mut t: Vec<_> = self
            .m
            .tables()
            .iter()
            .map(|(s, e)| (s, e.blocks().to_vec(), e.num_tokens()))
            .collect();
        t.sort();
        format!("{:?} {t:?}", self.m.stats())
    }

    /// What the engine does: appends tokens and performs the data layer's part.
    fn append(&mut self, seq: u64, tokens: &[u32]) {
        let s = SeqId(seq);
        let before = self.snapshot();
        let needed = self.m.blocks_needed(s, tokens.len()).unwrap();
        let free = self.m.num_free_blocks();
        match self.m.append_tokens(s, tokens) {
            Ok(out) => {
                assert_eq!(self.m.num_free_blocks(), free - needed);
                if let Some(c) = out.copy {
                    let (src, dst) = (c.src.index() * BS, c.dst.index() * BS);
                    self.data.copy_within(src..src + BS, dst);
                }
                let entry = self.seqs.get_mut(&seq).unwrap();
                for (i, &t) in tokens.iter().enumerate() {
                    let (b, off) = self.m.tables().lookup(s, entry.0.len() + i).unwrap();
                    self.data[b.index() * BS + off] = t;
                }
                entry.0.extend_from_slice(tokens);
            }
            Err(KvError::OutOfBlocks { requested, free: f }) => {
                assert_eq!((requested, f), (needed, free));
                assert!(needed > free);
                assert_eq!(self.snapshot(), before);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn apply(&mut self, op: &Op) {
        let before = self.snapshot();
        let exists = |h: &Self, s: u64| h.seqs.contains_key(&s);
        let failed = match *op {
            Op::Add(seq) => {
                let r = self.m.add_sequence(SeqId(seq));
                if exists(self, seq) {
                    assert_eq!(r, Err(KvError::SequenceExists(SeqId(seq))));
                    true
                } else {
                    assert_eq!(r, Ok(()));
                    self.seqs.insert(seq, (Vec::new(), seq as usize % 3));
                    false
                }
            }
            Op::AddWithPrefix { seq, template, len } => {
                let prompt: Vec<u32> = (0..len).map(|p| template_token(template, p)).collect();
                let r = self.m.add_sequence_with_prefix(SeqId(seq), &prompt);
                if exists(self, seq) {
                    assert_eq!(r, Err(KvError::SequenceExists(SeqId(seq))));
                    true
                } else {
                    let cached = r.unwrap();
                    assert_eq!(cached % BS, 0);
                    assert!(cached < len.max(1));
                    self.seqs.insert(seq, (prompt[..cached].to_vec(), template));
                    self.check_reads();
                    self.append(seq, &prompt[cached..]);
                    false
                }
            }
            Op::Allocate { seq, n } => {
                let free = self.m.num_free_blocks();
                let r = self.m.allocate_blocks(SeqId(seq), n).map(<[BlockId]>::len);
                match (exists(self, seq), n <= free) {
                    (false, _) => assert_eq!(r, Err(KvError::UnknownSequence(SeqId(seq)))),
                    (true, false) => {
                        assert_eq!(r, Err(KvError::OutOfBlocks { requested: n, free }));
                    }
                    (true, true) => assert_eq!(r, Ok(n)),
                }
                r.is_err()
            }
            Op::Append { seq, n, diverge } => {
                let Some((tokens, template)) = self.seqs.get(&seq).cloned() else {
                    let r = self.m.append_tokens(SeqId(seq), &[1]);
                    assert_eq!(r, Err(KvError::UnknownSequence(SeqId(seq))));
                    assert_eq!(self.snapshot(), before);
                    return;
                };
                let new: Vec<u32> = (tokens.len()..tokens.len() + n)
                    .map(|p| {
                        if diverge {
                            self.fresh += 1;
                            100_000 + self.fresh
                        } else {
                            template_token(template, p)
                        }
                    })
                    .collect();
                self.append(seq, &new);
                false
            }
            Op::Fork { parent, child } => {
                let r = self.m.fork(SeqId(parent), SeqId(child));
                if exists(self, child) {
                    assert_eq!(r, Err(KvError::SequenceExists(SeqId(child))));
                } else if !exists(self, parent) {
                    assert_eq!(r, Err(KvError::UnknownSequence(SeqId(parent))));
                } else {
                    assert_eq!(r, Ok(()));
                    let p = self.seqs[&parent].clone();
                    self.seqs.insert(child, p);
                }
                r.is_err()
            }
            Op::FreeLast(seq) => {
                let last = self
                    .m
                    .tables()
                    .blocks(SeqId(seq))
                    .ok()
                    .and_then(|b| b.last().copied());
                if let Some(b) = last {
                    let n = self.m.tables().blocks(SeqId(seq)).unwrap().len();
                    self.m.free_block(SeqId(seq), b).unwrap();
                    let toks = &mut self.seqs.get_mut(&seq).unwrap().0;
                    toks.truncate(toks.len().min((n - 1) * BS));
                }
                false
            }
            Op::FreeAny { seq, block } => {
                let b = BlockId(block);
                let last = self
                    .m
                    .tables()
                    .blocks(SeqId(seq))
                    .ok()
                    .and_then(|x| x.last().copied());
                let n = self
                    .m
                    .tables()
                    .blocks(SeqId(seq))
                    .map_or(0, <[BlockId]>::len);
                let r = self.m.free_block(SeqId(seq), b);
                assert_eq!(r.is_ok(), last == Some(b), "{r:?}");
                if r.is_ok() {
                    let toks = &mut self.seqs.get_mut(&seq).unwrap().0;
                    toks.truncate(toks.len().min((n - 1) * BS));
                }
                r.is_err()
            }
            Op::FreeSeq(seq) => {
                let r = self.m.free_sequence(SeqId(seq));
                assert_eq!(r.is_ok(), self.seqs.remove(&seq).is_some());
                r.is_err()
            }
        };
        if failed {
            assert_eq!(self.snapshot(), before, "a failed {op:?} changed state");
        }
        self.m.check_invariants().unwrap();
        self.check_reads();
    }

    /// Every sequence reads back exactly its tokens through its block table.
    fn check_reads(&self) {
        for (&seq, (tokens, _)) in &self.seqs {
            assert_eq!(self.m.tables().len(SeqId(seq)).unwrap(), tokens.len());
            for (i, &t) in tokens.iter().enumerate() {
                let (b, off) = self.m.tables().lookup(SeqId(seq), i).unwrap();
                assert_eq!(self.data[b.index() * BS + off], t, "seq {seq} token {i}");
            }
        }
    }
}

fn run(ops: &[Op], prefix_caching: bool) {
    let cfg = KvConfig::new(BLOCKS)
        .with_block_size(BS)
        .with_prefix_caching(prefix_caching);
    let mut h = Harness {
        m: BlockManager::new(cfg).unwrap(),
        seqs: BTreeMap::new(),
        data: vec![u32::MAX; BLOCKS * BS],
        fresh: 0,
    };
    for op in ops {
        h.apply(op);
    }
    let seqs: Vec<u64> = h.seqs.keys().copied().collect();
    for s in seqs {
        h.m.free_sequence(SeqId(s)).unwrap();
    }
    let st = h.m.stats();
    assert_eq!(st.free_blocks, st.total_blocks, "blocks leaked");
    assert_eq!(
        (st.used_blocks, st.tokens_stored, st.num_sequences),
        (0, 0, 0)
    );
    h.m.check_invariants().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops, false);
    }

    #[test]
    fn random_operations_with_prefix_caching(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops, true);
    }
}
