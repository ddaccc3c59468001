//! Prefix caching (vLLM's automatic prefix caching; nano-vllm's `hash_blocks` is the model):
//! every full block of `page` positions of a sequence is named by a hash of its tokens chained
//! with the hash of everything before it (and of the sequence's LoRA factors, which change the
//! keys and values). A new sequence whose tokens start with cached blocks takes them instead of
//! recomputing them. On the GPU the blocks are the paged pool's own pages, shared by reference
//! (kv_cache.rs: registered when full, kept on the free list when unheld, evicted least recently
//! released first); on the CPU, whose caches are contiguous, a bounded store keeps a copy of each
//! block's rows and copies them into the new cache (`CpuBlocks`, evicted least recently used).
//!
//! A hit is decided by the 64-bit hash alone (as vLLM's default); the rows a hit brings are the
//! rows the same tokens computed before, so a sequence continues as if it had run its prefix.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::{Backend, Model, SeqId};
use crate::cpu::KvCache;

/// Prefix caching's per-model state (Options::prefix_cache).
pub(super) struct Prefix {
    /// Positions per block (the GPU pool's page; the CPU uses the same default).
    page: usize,
    /// (max_seqs) the tokens each live sequence's cache holds, in position order; None once
    /// out of step with the cache (a forward that failed half way): nothing more is registered.
    tokens: Vec<Option<Vec<u32>>>,
    /// (max_seqs) the hashes of each sequence's full blocks registered so far.
    hashes: Vec<Vec<u64>>,
    /// The CPU's store of block copies; None on the GPU.
    cpu: Option<CpuBlocks>,
    stats: PrefixStats,
}

/// What prefix caching has done since the model was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens looked up (every prompt that started in an empty sequence).
    pub query_tokens: u64,
    /// Of those, tokens whose keys and values came from the cache instead of a forward.
    pub hit_tokens: u64,
    /// Blocks cached now (held or free).
    pub cached_blocks: usize,
    /// Cached blocks given up for room.
    pub evictions: u64,
}

impl Prefix {
    /// Prefix caching over blocks of `page` positions for `max_seqs` sequences; on the CPU
    /// (`cpu_blocks` Some) a store of at most that many block copies.
    pub(super) fn new(page: usize, max_seqs: usize, cpu_blocks: Option<usize>) -> Self {
        Prefix {
            page,
            tokens: vec![Some(vec![]); max_seqs],
            hashes: vec![vec![]; max_seqs],
            cpu: cpu_blocks.map(|capacity| CpuBlocks {
                capacity,
                blocks: HashMap::new(),
                clock: 0,
            }),
            stats: PrefixStats::default(),
        }
    }

    /// A sequence is made empty (new, or reused after release) or forked from `parent`.
    pub(super) fn reset(&mut self, seq: SeqId, parent: Option<SeqId>) {
        let (t, h) = parent.map_or((Some(vec![]), vec![]), |p| {
            (self.tokens[p.0].clone(), self.hashes[p.0].clone())
        });
        (self.tokens[seq.0], self.hashes[seq.0]) = (t, h);
    }

    /// `seq`'s cache was cut to `len` positions.
    pub(super) fn truncate(&mut self, seq: SeqId, len: usize) {
        if let Some(t) = self.tokens[seq.0].as_mut() {
            t.truncate(len);
        }
        self.hashes[seq.0].truncate(len / self.page);
    }
}

/// Hash of a block of `tokens` after a prefix hashed `prev` (the first block's `prev`: the seed).
fn block_hash(prev: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    (prev, tokens).hash(&mut h);
    h.finish()
}

/// The seed of a sequence's chain: its LoRA factors (none: the base model's).
fn seed(factors: &[f32]) -> u64 {
    let mut h = DefaultHasher::new();
    factors.iter().map(|f| f.to_bits()).collect::<Vec<_>>().hash(&mut h);
    h.finish()
}

/// The CPU's cached blocks: each a copy of one block's key and value rows of every layer.
struct CpuBlocks {
    capacity: usize,
    blocks: HashMap<u64, CpuBlock>,
    clock: u64, // ticks on each use; a block's `used` says when it was last used
}

struct CpuBlock {
    k: Vec<Vec<f32>>, // n_layers × (page, kv_dim)
    v: Vec<Vec<f32>>,
    used: u64,
}

impl CpuBlocks {
    /// Keep a copy of positions [i·page, (i+1)·page) of `cache` under `hash`, evicting the least
    /// recently used block when full.
    /// `floats`: values per layer in a block (page × kv_dim). Returns the blocks evicted.
    fn insert(&mut self, hash: u64, cache: &KvCache, i: usize, floats: usize) -> u64 {
        if self.blocks.contains_key(&hash) || self.capacity == 0 {
            return 0;
        }
        let mut evicted = 0;
        if self.blocks.len() >= self.capacity {
            let (&old, _) = self.blocks.iter().min_by_key(|(_, b)| b.used).expect("a full store");
            self.blocks.remove(&old);
            evicted = 1;
        }
        self.clock += 1;
        let cut = |layers: &[Vec<f32>]| (layers.iter().map(|l| l[i * floats..(i + 1) * floats].to_vec())).collect();
        let block = CpuBlock {
            k: cut(&cache.k),
            v: cut(&cache.v),
            used: self.clock,
        };
        self.blocks.insert(hash, block);
        evicted
    }
}

impl Model {
    /// Start empty sequence `seq` with the cached blocks its `tokens` begin with (at most all
    /// but the last token's: a forward must still run to give logits). Returns the positions
    /// now in its cache (0 without prefix caching or a hit), a multiple of the block size.
    pub fn reuse_prefix(&mut self, seq: SeqId, tokens: &[u32]) -> usize {
        let mut prev = seed(&self.lora_factors[seq.0]);
        let Some(p) = self.prefix.as_mut() else {
            return 0;
        };
        assert!(p.tokens[seq.0] == Some(vec![]), "a prefix goes into an empty sequence");
        let page = p.page;
        let mut hashes = vec![];
        for block in tokens[..tokens.len().saturating_sub(1)].chunks_exact(page) {
            prev = block_hash(prev, block);
            hashes.push(prev);
        }
        let n = match (&mut self.backend, p.cpu.as_mut()) {
            (Backend::Gpu(g), _) => {
                let blocks = g.kv.cached_prefix(&hashes);
                g.kv.add_prefix(seq.0, &blocks);
                blocks.len()
            }
            (Backend::Cpu { caches, .. }, Some(store)) => {
                let n = hashes.iter().take_while(|h| store.blocks.contains_key(h)).count();
                let cache = caches[seq.0].as_mut().expect("live sequence");
                for h in &hashes[..n] {
                    store.clock += 1;
                    let b = store.blocks.get_mut(h).unwrap();
                    b.used = store.clock;
                    for (dst, src) in cache.k.iter_mut().zip(&b.k).chain(cache.v.iter_mut().zip(&b.v)) {
                        dst.extend_from_slice(src);
                    }
                }
                cache.len = n * page;
                n
            }
            (Backend::Cpu { .. }, None) => unreachable!("the CPU's prefix state has a store"),
        };
        p.stats.query_tokens += tokens.len() as u64;
        p.stats.hit_tokens += (n * page) as u64;
        p.tokens[seq.0] = Some(tokens[..n * page].to_vec());
        p.hashes[seq.0] = hashes[..n].to_vec();
        n * page
    }

    /// `tokens` went into `seq`'s cache at its end: register the blocks they filled.
    pub(super) fn note_tokens(&mut self, seq: SeqId, tokens: &[u32]) {
        let len = self.len(seq);
        let factors = &self.lora_factors[seq.0];
        let Some(p) = self.prefix.as_mut() else {
            return;
        };
        let page = p.page;
        let Some(all) = p.tokens[seq.0].as_mut() else {
            return;
        };
        all.extend_from_slice(tokens);
        if all.len() != len {
            p.tokens[seq.0] = None; // out of step with the cache: stop registering its blocks
            return;
        }
        let (all, hashes) = (p.tokens[seq.0].as_ref().unwrap(), &mut p.hashes[seq.0]);
        for i in hashes.len()..all.len() / page {
            let prev = hashes.last().copied().unwrap_or_else(|| seed(factors));
            let h = block_hash(prev, &all[i * page..(i + 1) * page]);
            hashes.push(h);
            match (&mut self.backend, p.cpu.as_mut()) {
                (Backend::Gpu(g), _) => g.kv.register(seq.0, i, h),
                (Backend::Cpu { caches, .. }, Some(store)) => {
                    let cache = caches[seq.0].as_ref().expect("live sequence");
                    p.stats.evictions += store.insert(h, cache, i, page * self.cfg.kv_dim());
                }
                (Backend::Cpu { .. }, None) => unreachable!("the CPU's prefix state has a store"),
            }
        }
    }

    /// Prefix caching's counts; None when it is off.
    pub fn prefix_stats(&self) -> Option<PrefixStats> {
        let p = self.prefix.as_ref()?;
        let mut s = p.stats;
        match (&self.backend, &p.cpu) {
            (Backend::Gpu(g), _) => {
                s.cached_blocks = g.kv.alloc.n_cached();
                s.evictions = g.kv.alloc.evictions;
            }
            (_, Some(store)) => s.cached_blocks = store.blocks.len(),
            _ => {}
        }
        Some(s)
    }
}
