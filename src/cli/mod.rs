//! The command line: arguments (`args`), the commands that run a model (`run`), `info`, and the
//! benchmark front ends (`bench`). Part of the binary only; the library never imports it.

pub mod args;
mod bench;
mod info;
mod load;
mod run;

pub use run::run;
