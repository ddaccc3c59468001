//! The command line: arguments (`args`), the commands that run a model (`run`, `chat`, `logits`), Ctrl-C
//! and closed pipes (`signals`), streaming text (`stream`), `info`, and the benchmark front ends
//! (`bench`). Part of the binary only; the library never imports it.

pub mod args;
mod bench;
mod chat;
mod info;
pub mod load;
mod logits;
mod lora;
pub mod lora_args;
pub mod model_path;
mod parse;
mod run;
pub mod serve_args;
pub mod signals;
pub mod spec;
pub mod spec_args;
mod stream;

pub use run::run;
