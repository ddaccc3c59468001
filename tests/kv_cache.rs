//! The KV-cache bookkeeping (src/kv_cache.rs) on its own: block tables, slots, forks sharing
//! pages with copy-on-write, truncation and release, with property tests of the invariants.

use tinfer::kv_cache::*;

#[test]
fn slots_follow_the_block_table() {
    let mut kv = KvPages::new(4, 8, 2);
    let a = kv.add_seq().unwrap();
    let (slots, copies) = kv.append(a, 6).unwrap();
    assert!(copies.is_empty());
    // blocks 0 then 1: rows 0..4 then 4..6
    assert_eq!(slots, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(kv.block_table(a), &[0, 1]);
    assert_eq!(kv.slot(a, 5), 5);
    kv.check_invariants();
}

#[test]
fn fork_shares_full_blocks_and_copies_the_partial_one_on_write() {
    let mut kv = KvPages::new(4, 8, 3);
    let a = kv.add_seq().unwrap();
    kv.append(a, 6).unwrap(); // blocks [0, 1], block 1 has 2 rows
    let b = kv.fork(a).unwrap();
    assert_eq!(kv.block_table(b), kv.block_table(a));
    assert_eq!(kv.blocks_in_use(), 2);
    // b appends: block 1 is shared and partly filled -> copied to a fresh block
    let (slots, copies) = kv.append(b, 1).unwrap();
    assert_eq!(
        copies,
        vec![BlockCopy {
            src: 1,
            dst: 2,
            rows: 2
        }]
    );
    assert_eq!(slots, vec![2 * 4 + 2]);
    assert_eq!(kv.block_table(b), &[0, 2]);
    // a is now the only holder of block 1 and appends in place
    let (slots, copies) = kv.append(a, 1).unwrap();
    assert!(copies.is_empty());
    assert_eq!(slots, vec![4 + 2]);
    kv.check_invariants();
    kv.release(a);
    kv.release(b);
    assert_eq!(kv.blocks_in_use(), 0);
    kv.check_invariants();
}

#[test]
fn full_pool_is_an_error_and_changes_nothing() {
    let mut kv = KvPages::new(4, 2, 1);
    let a = kv.add_seq().unwrap();
    kv.append(a, 5).unwrap();
    let before = kv.block_table(a).to_vec();
    let err = kv.append(a, 4).unwrap_err();
    assert_eq!(
        err,
        KvError::Full {
            needed: 1,
            free: 0,
            total: 2,
            page: 4
        }
    );
    assert!(err.to_string().contains("KV cache full"));
    assert_eq!(kv.block_table(a), before);
    assert_eq!(kv.len(a), 5);
    kv.append(a, 3).unwrap(); // still room in the last block
    kv.check_invariants();
}

#[test]
fn contiguous_is_one_page_per_sequence() {
    let mut kv = KvPages::contiguous(100, 2, 16);
    assert_eq!(kv.page, 112);
    let a = kv.add_seq().unwrap();
    let b = kv.add_seq().unwrap();
    kv.append(a, 3).unwrap();
    let (slots, _) = kv.append(b, 2).unwrap();
    assert_eq!(slots, vec![112, 113]);
    assert_eq!(kv.add_seq(), Err(KvError::NoSequenceSlot(2)));
}

#[test]
fn waste_counts_unfilled_rows_of_last_pages() {
    let mut kv = KvPages::new(16, 64, 4);
    for len in [16, 17, 40] {
        let s = kv.add_seq().unwrap();
        kv.append(s, len).unwrap();
    }
    // blocks: 1 + 2 + 3 = 6 (96 rows) holding 73 positions
    assert!((kv.waste() - (1.0 - 73.0 / 96.0)).abs() < 1e-12);
}

/// xorshift64*: a seeded generator so failures reproduce.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 33) as usize % n
    }
}

/// Property test: random add/fork/append/truncate/release sequences never hand out a block
/// twice, never leak, keep reference counts equal to the tables holding each block, keep
/// every position's slot stable until it is truncated, and return the pool to empty.
#[test]
fn random_operations_keep_the_pool_consistent() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15));
        let page = 1 + rng.below(8);
        let mut kv = KvPages::new(page, 4 + rng.below(40), 1 + rng.below(6));
        // Model of the cache contents: per sequence, the "value" written at each position.
        // Slots are checked to hold the value the sequence expects (shared rows included).
        let mut rows: Vec<Option<(usize, u64)>> = vec![None; kv.alloc.n_blocks() * page];
        let mut expect: Vec<Vec<u64>> = vec![vec![]; kv.max_seqs()];
        let mut next_value = 0u64;
        for _ in 0..300 {
            let live: Vec<usize> = kv.seq_ids().collect();
            let pick = |rng: &mut Rng| live[rng.below(live.len())];
            match rng.below(10) {
                0 | 1 => {
                    if let Ok(id) = kv.add_seq() {
                        expect[id].clear();
                    }
                }
                2 if !live.is_empty() => {
                    let p = pick(&mut rng);
                    if let Ok(id) = kv.fork(p) {
                        expect[id] = expect[p].clone();
                    }
                }
                3 if !live.is_empty() => {
                    let id = pick(&mut rng);
                    kv.release(id);
                    expect[id].clear();
                }
                4 if !live.is_empty() => {
                    let id = pick(&mut rng);
                    let len = rng.below(kv.len(id) + 1);
                    kv.truncate(id, len);
                    expect[id].truncate(len);
                }
                _ if !live.is_empty() => {
                    let id = pick(&mut rng);
                    let n = 1 + rng.below(2 * page + 1);
                    let free_before = kv.alloc.n_free();
                    match kv.append(id, n) {
                        Ok((slots, copies)) => {
                            for c in copies {
                                for r in 0..c.rows {
                                    rows[c.dst as usize * page + r] = rows[c.src as usize * page + r];
                                }
                            }
                            for s in slots {
                                next_value += 1;
                                rows[s as usize] = Some((id, next_value));
                                expect[id].push(next_value);
                            }
                        }
                        Err(KvError::Full { .. }) => assert_eq!(kv.alloc.n_free(), free_before),
                        Err(e) => panic!("{e}"),
                    }
                }
                _ => {}
            }
            kv.check_invariants();
            for id in kv.seq_ids() {
                assert_eq!(kv.len(id), expect[id].len());
                for (pos, &v) in expect[id].iter().enumerate() {
                    let got = rows[kv.slot(id, pos) as usize].map(|r| r.1);
                    assert_eq!(got, Some(v), "seed {seed}: sequence {id} position {pos}");
                }
            }
        }
        for id in kv.seq_ids().collect::<Vec<_>>() {
            kv.release(id);
        }
        kv.check_invariants();
        assert_eq!(kv.blocks_in_use(), 0, "seed {seed}: blocks leaked");
    }
}

/// The value a row holds when its position's tokens are `t` (the position is `t.len() - 1`):
/// what a forward would compute from them. Also each full block's prefix hash.
fn value(t: &[u32]) -> u64 {
    t.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// Property test of prefix caching: sequences over a two-letter alphabet (so prefixes repeat)
/// start from the cached blocks of their prompt (`cached_prefix` + `add_prefix`), append,
/// register their full blocks, fork, truncate and release in random order under a small pool
/// that must evict. Every row every sequence holds, whether cached or its own, holds the value
/// its own tokens put there (a cached block is never written while another can find it), and
/// the pool ends empty.
#[test]
fn random_prefix_reuse_never_serves_stale_rows() {
    let mut hits = 0;
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15));
        let page = 1 + rng.below(4);
        let mut kv = KvPages::new(page, 4 + rng.below(30), 1 + rng.below(5));
        let mut rows: Vec<Option<u64>> = vec![None; kv.alloc.n_blocks() * page];
        let mut toks: Vec<Vec<u32>> = vec![vec![]; kv.max_seqs()];
        for step in 0..300 {
            let live: Vec<usize> = kv.seq_ids().collect();
            let pick = |rng: &mut Rng| live[rng.below(live.len())];
            match rng.below(10) {
                0..=2 => {
                    if let Ok(id) = kv.add_seq() {
                        let prompt: Vec<u32> = (0..1 + rng.below(4 * page)).map(|_| rng.below(2) as u32).collect();
                        let full = (prompt.len() - 1) / page;
                        let hashes: Vec<u64> = (1..=full).map(|i| value(&prompt[..i * page])).collect();
                        let blocks = kv.cached_prefix(&hashes);
                        kv.add_prefix(id, &blocks);
                        hits += blocks.len();
                        toks[id] = prompt[..blocks.len() * page].to_vec();
                    }
                }
                3 if !live.is_empty() => {
                    let p = pick(&mut rng);
                    if let Ok(id) = kv.fork(p) {
                        toks[id] = toks[p].clone();
                    }
                }
                4 if !live.is_empty() => {
                    let id = pick(&mut rng);
                    kv.release(id);
                    toks[id].clear();
                }
                5 if !live.is_empty() => {
                    let id = pick(&mut rng);
                    let len = rng.below(kv.len(id) + 1);
                    kv.truncate(id, len);
                    toks[id].truncate(len);
                }
                _ if !live.is_empty() => {
                    let id = pick(&mut rng);
                    let n = 1 + rng.below(2 * page + 1);
                    match kv.append(id, n) {
                        Ok((slots, copies)) => {
                            for c in copies {
                                for r in 0..c.rows {
                                    rows[c.dst as usize * page + r] = rows[c.src as usize * page + r];
                                }
                            }
                            for s in slots {
                                toks[id].push(rng.below(2) as u32);
                                rows[s as usize] = Some(value(&toks[id]));
                            }
                            for i in 0..kv.len(id) / page {
                                kv.register(id, i, value(&toks[id][..(i + 1) * page]));
                            }
                        }
                        Err(KvError::Full { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                _ => {}
            }
            kv.check_invariants();
            for id in kv.seq_ids() {
                assert_eq!(kv.len(id), toks[id].len());
                for pos in 0..toks[id].len() {
                    let want = value(&toks[id][..=pos]);
                    let got = rows[kv.slot(id, pos) as usize];
                    assert_eq!(
                        got,
                        Some(want),
                        "seed {seed} step {step}: sequence {id} position {pos} holds a stale row"
                    );
                }
            }
        }
        for id in kv.seq_ids().collect::<Vec<_>>() {
            kv.release(id);
        }
        kv.check_invariants();
        assert_eq!(kv.blocks_in_use(), 0, "seed {seed}: blocks leaked");
    }
    assert!(
        hits > 1000,
        "only {hits} cached blocks were reused: the test does not exercise reuse"
    );
}
