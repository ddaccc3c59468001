//! The CPU reference path: the oracle every GPU result is compared against.
pub mod forward;
pub mod ops;

pub use forward::{forward, forward_batch, Item, KvCache};
