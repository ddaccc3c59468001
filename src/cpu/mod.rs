//! The CPU reference path: the oracle every GPU result is compared against.
pub mod forward;
pub mod ops;

pub use forward::{forward, KvCache};
