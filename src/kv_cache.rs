//! Paged KV bookkeeping, pure Rust (no GPU): which cache rows ("slots") each sequence's keys and
//! values live in. The cache is a pool of blocks (pages) of `page` rows each; a sequence owns a
//! block table, the list of its blocks in position order, so position `p` lives in row
//! `table[p / page] * page + p % page`. Kernels only ever see block tables and slots.
//!
//! Sharing: `fork` gives a new sequence the parent's blocks (reference counted), so a prompt
//! prefilled once serves many continuations. A full shared block is never written again; a shared
//! block that is only partly filled is copied before the first append to it (copy-on-write): the
//! append returns the copy to make, the caller performs it on the device before writing.
//!
//! Prefix caching (vLLM's automatic prefix caching, nano-vllm's `hash_blocks`): a full block
//! can be registered under a hash of its tokens and of everything before them
//! (`prefix::block_hashes`). A later sequence whose prompt starts with the same tokens takes those
//! blocks (`add_seq_with`) instead of recomputing them. A block whose last holder goes keeps its
//! rows and its hash on the free list: free blocks without a hash are handed out first, then
//! hashed ones least recently released first (evicting their hash), so cached pages live until the
//! pool needs the room.
//!
//! A "contiguous" cache is the same bookkeeping with one page the size of the whole context per
//! sequence (see `KvPages::contiguous`).

use std::collections::{HashMap, VecDeque};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KvError {
    #[error(
        "KV cache full: {needed} more blocks of {page} tokens are needed but {free} are free ({total} in all); \
         raise --kv-blocks / --kv-memory, shorten the prompt, or use fewer sequences"
    )]
    Full {
        needed: usize,
        free: usize,
        total: usize,
        page: usize,
    },
    #[error("too many sequences: all {0} sequence slots are in use; raise --n-seq or release one")]
    NoSequenceSlot(usize),
}

/// The pool of blocks: reference counts, a free list, and the hashes of cached blocks.
#[derive(Clone, Debug)]
pub struct BlockAllocator {
    refs: Vec<u32>,            // (n_blocks,) holders of each block; 0 = free
    free: VecDeque<u32>,       // free block ids; the next one handed out is at the front
    hash: Vec<Option<u64>>,    // (n_blocks,) the prefix hash a full block is registered under
    cached: HashMap<u64, u32>, // prefix hash -> the block holding those rows
    /// Cached blocks handed out for other rows (their hash forgotten) since the pool was made.
    pub evictions: u64,
}

impl BlockAllocator {
    pub fn new(n_blocks: usize) -> Self {
        BlockAllocator {
            refs: vec![0; n_blocks],
            free: (0..n_blocks as u32).collect(),
            hash: vec![None; n_blocks],
            cached: HashMap::new(),
            evictions: 0,
        }
    }
    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }
    pub fn n_free(&self) -> usize {
        self.free.len()
    }
    pub fn refs(&self, block: u32) -> u32 {
        self.refs[block as usize]
    }
    /// Blocks registered under a prefix hash (in use or free).
    pub fn n_cached(&self) -> usize {
        self.cached.len()
    }
    fn alloc(&mut self) -> u32 {
        let b = self
            .free
            .pop_front()
            .expect("alloc: caller checked there is a free block");
        assert_eq!(self.refs[b as usize], 0, "block {b} handed out twice");
        if self.hash[b as usize].is_some() {
            self.evictions += 1;
            self.unhash(b);
        }
        self.refs[b as usize] = 1;
        b
    }
    /// Forget the hash of block `b` (its rows are about to change).
    fn unhash(&mut self, b: u32) {
        if let Some(h) = self.hash[b as usize].take() {
            if self.cached.get(&h) == Some(&b) {
                self.cached.remove(&h);
            }
        }
    }
    /// Take cached block `b` for one more holder (back from the free list when it has none).
    fn take_cached(&mut self, b: u32) {
        if self.refs[b as usize] == 0 {
            let at = self
                .free
                .iter()
                .position(|&f| f == b)
                .expect("a free block is on the free list");
            self.free.remove(at);
        }
        self.refs[b as usize] += 1;
    }
    fn share(&mut self, block: u32) {
        assert!(self.refs[block as usize] > 0, "sharing free block {block}");
        self.refs[block as usize] += 1;
    }
    fn release(&mut self, block: u32) {
        let r = &mut self.refs[block as usize];
        assert!(*r > 0, "block {block} released twice");
        *r -= 1;
        if *r == 0 {
            // cached rows stay until the pool needs them, the least recently released first
            if self.hash[block as usize].is_some() {
                self.free.push_back(block);
            } else {
                self.free.push_front(block);
            }
        }
    }
}

/// Copy the first `rows` rows of block `src` into block `dst` (copy-on-write of a shared page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCopy {
    pub src: u32,
    pub dst: u32,
    pub rows: usize,
}

#[derive(Clone, Debug, Default)]
struct Seq {
    blocks: Vec<u32>, // block table: block of positions [i*page, (i+1)*page)
    len: usize,       // positions held
}

/// Block tables of up to `max_seqs` sequences over one block pool.
#[derive(Clone, Debug)]
pub struct KvPages {
    pub page: usize,
    pub alloc: BlockAllocator,
    seqs: Vec<Option<Seq>>, // (max_seqs,) a sequence id is its index here (its block-table row)
    /// Set when a block table changed since the caller last cleared it (the device copy is stale).
    pub tables_dirty: bool,
}

impl KvPages {
    /// A pool of `n_blocks` pages of `page` rows for up to `max_seqs` sequences.
    pub fn new(page: usize, n_blocks: usize, max_seqs: usize) -> Self {
        assert!(page > 0 && max_seqs > 0);
        KvPages {
            page,
            alloc: BlockAllocator::new(n_blocks),
            seqs: vec![None; max_seqs],
            tables_dirty: true,
        }
    }

    /// The unpaged layout: one page of `context` rows per sequence (`round_to` keeps the page a
    /// multiple of the kernels' key tile).
    pub fn contiguous(context: usize, max_seqs: usize, round_to: usize) -> Self {
        Self::new(context.div_ceil(round_to) * round_to, max_seqs, max_seqs)
    }

    pub fn max_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Most blocks one sequence of `context` positions can hold: the block-table row length.
    pub fn max_blocks_per_seq(&self, context: usize) -> usize {
        context.div_ceil(self.page)
    }

    fn seq(&self, id: usize) -> &Seq {
        self.seqs[id]
            .as_ref()
            .unwrap_or_else(|| panic!("sequence {id} does not exist"))
    }

    /// A new empty sequence; its id is its block-table row.
    pub fn add_seq(&mut self) -> Result<usize, KvError> {
        let id = self
            .seqs
            .iter()
            .position(Option::is_none)
            .ok_or(KvError::NoSequenceSlot(self.seqs.len()))?;
        self.seqs[id] = Some(Seq::default());
        self.tables_dirty = true;
        Ok(id)
    }

    /// A new sequence holding the same positions as `parent`, sharing its blocks.
    pub fn fork(&mut self, parent: usize) -> Result<usize, KvError> {
        let src = self.seq(parent).clone();
        let id = self.add_seq()?;
        for &b in &src.blocks {
            self.alloc.share(b);
        }
        self.seqs[id] = Some(src);
        Ok(id)
    }

    pub fn len(&self, id: usize) -> usize {
        self.seq(id).len
    }

    /// The cached blocks that hold the prefix whose block hashes are `hashes` (prefix::
    /// block_hashes), as far as they are all cached.
    pub fn cached_prefix(&self, hashes: &[u64]) -> Vec<u32> {
        hashes.iter().map_while(|h| self.alloc.cached.get(h).copied()).collect()
    }

    /// Let empty sequence `id` hold the cached `blocks` (from `cached_prefix`) as its first
    /// positions: shared with their other holders, taken back from the free list when unheld.
    pub fn add_prefix(&mut self, id: usize, blocks: &[u32]) {
        let s = self.seqs[id].as_mut().expect("sequence exists");
        assert!(s.len == 0, "a prefix goes into an empty sequence");
        for &b in blocks {
            assert!(self.alloc.hash[b as usize].is_some(), "block {b} is not cached");
            self.alloc.take_cached(b);
        }
        s.blocks = blocks.to_vec();
        s.len = blocks.len() * self.page;
        self.tables_dirty = true;
    }

    /// Register block `index` of sequence `id`, full and written, under prefix hash `hash`; a
    /// block already cached under it wins (the rows are the same).
    pub fn register(&mut self, id: usize, index: usize, hash: u64) {
        let s = self.seq(id);
        assert!(
            s.len >= (index + 1) * self.page,
            "block {index} of sequence {id} is not full"
        );
        let b = s.blocks[index];
        if self.alloc.hash[b as usize].is_none() && !self.alloc.cached.contains_key(&hash) {
            self.alloc.hash[b as usize] = Some(hash);
            self.alloc.cached.insert(hash, b);
        }
    }

    pub fn block_table(&self, id: usize) -> &[u32] {
        &self.seq(id).blocks
    }

    /// The cache row of position `pos` of sequence `id`.
    pub fn slot(&self, id: usize, pos: usize) -> u32 {
        let s = self.seq(id);
        assert!(pos < s.blocks.len() * self.page, "position {pos} has no block");
        s.blocks[pos / self.page] * self.page as u32 + (pos % self.page) as u32
    }

    /// Blocks `append(id, n)` would take from the pool.
    pub fn blocks_needed(&self, id: usize, n: usize) -> usize {
        let s = self.seq(id);
        let new = (s.len + n).div_ceil(self.page).saturating_sub(s.blocks.len());
        let last_shared_partial =
            !s.len.is_multiple_of(self.page) && n > 0 && s.blocks.last().is_some_and(|&b| self.alloc.refs(b) > 1);
        new + last_shared_partial as usize
    }

    /// Reserve rows for `n` more positions of sequence `id`. Returns their slots, and the block
    /// copies to perform before writing them (copy-on-write of a shared partly-filled block).
    /// Either everything is reserved or, when the pool is too small, nothing changes.
    pub fn append(&mut self, id: usize, n: usize) -> Result<(Vec<u32>, Vec<BlockCopy>), KvError> {
        let needed = self.blocks_needed(id, n);
        if needed > self.alloc.n_free() {
            return Err(KvError::Full {
                needed,
                free: self.alloc.n_free(),
                total: self.alloc.n_blocks(),
                page: self.page,
            });
        }
        let page = self.page;
        let mut copies = vec![];
        let mut s = self.seqs[id].take().expect("sequence exists");
        if n > 0 && !s.len.is_multiple_of(page) {
            let last = *s.blocks.last().expect("a partly filled sequence has a block");
            if self.alloc.refs(last) == 1 {
                self.alloc.unhash(last); // rows past the end are rewritten: no longer that prefix
            } else {
                let dst = self.alloc.alloc();
                self.alloc.release(last);
                *s.blocks.last_mut().unwrap() = dst;
                copies.push(BlockCopy {
                    src: last,
                    dst,
                    rows: s.len % page,
                });
                self.tables_dirty = true;
            }
        }
        let mut slots = Vec::with_capacity(n);
        for pos in s.len..s.len + n {
            if pos / page == s.blocks.len() {
                s.blocks.push(self.alloc.alloc());
                self.tables_dirty = true;
            }
            slots.push(s.blocks[pos / page] * page as u32 + (pos % page) as u32);
        }
        s.len += n;
        self.seqs[id] = Some(s);
        Ok((slots, copies))
    }

    /// Forget positions from `len` on, returning blocks no longer needed to the pool.
    pub fn truncate(&mut self, id: usize, len: usize) {
        let page = self.page;
        let s = self.seqs[id].as_mut().expect("sequence exists");
        let len = len.min(s.len);
        for b in s.blocks.drain(len.div_ceil(page)..) {
            self.alloc.release(b);
            self.tables_dirty = true;
        }
        s.len = len;
    }

    /// End sequence `id`: its blocks go back to the pool (shared ones when their last holder goes).
    pub fn release(&mut self, id: usize) {
        self.truncate(id, 0);
        self.seqs[id] = None;
        self.tables_dirty = true;
    }

    /// Ids of the live sequences.
    pub fn seq_ids(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.seqs.len()).filter(|&i| self.seqs[i].is_some())
    }

    pub fn blocks_in_use(&self) -> usize {
        self.alloc.n_blocks() - self.alloc.n_free()
    }

    /// Rows held in blocks but not (yet) used by any position, as a fraction of the rows in use:
    /// the memory lost to partly filled last pages. Shared blocks count once.
    pub fn waste(&self) -> f64 {
        let used_rows = self.blocks_in_use() * self.page;
        if used_rows == 0 {
            return 0.0;
        }
        let mut filled = vec![0usize; self.alloc.n_blocks()];
        for s in self.seqs.iter().flatten() {
            for (i, &b) in s.blocks.iter().enumerate() {
                let rows = (s.len - i * self.page).min(self.page);
                filled[b as usize] = filled[b as usize].max(rows);
            }
        }
        1.0 - filled.iter().sum::<usize>() as f64 / used_rows as f64
    }

    /// Check every invariant (tests call this after each operation): each block's reference
    /// count equals the number of tables holding it, free blocks are held by none, no block is
    /// both free and held, and each table has exactly the blocks its length needs.
    pub fn check_invariants(&self) {
        let mut holders = vec![0u32; self.alloc.n_blocks()];
        for s in self.seqs.iter().flatten() {
            assert_eq!(s.blocks.len(), s.len.div_ceil(self.page), "table length vs positions");
            for &b in &s.blocks {
                holders[b as usize] += 1;
            }
        }
        let mut is_free = vec![false; self.alloc.n_blocks()];
        for &b in &self.alloc.free {
            assert!(!is_free[b as usize], "block {b} is on the free list twice");
            is_free[b as usize] = true;
        }
        for (&h, &b) in &self.alloc.cached {
            assert_eq!(
                self.alloc.hash[b as usize],
                Some(h),
                "cached block {b} under another hash"
            );
        }
        let hashed = self.alloc.hash.iter().flatten().count();
        assert_eq!(hashed, self.alloc.cached.len(), "hashed blocks vs the cache's map");
        for b in 0..self.alloc.n_blocks() {
            assert_eq!(self.alloc.refs[b], holders[b], "reference count of block {b}");
            assert_eq!(is_free[b], holders[b] == 0, "block {b}: free list vs holders");
        }
    }
}
