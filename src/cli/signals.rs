//! Ctrl-C and closed pipes, handled like llama-cli and `cat`.
//!
//! - SIGPIPE gets its default action back (Rust ignores it, so every write to a closed pipe
//!   would fail with "Broken pipe" and `println!` would panic): `tinfer info | head -1` ends
//!   quietly the moment its output is no longer read, as `cat` does.
//! - Ctrl-C (SIGINT): while a reply is being generated, it asks the generation to stop (the
//!   caller checks `interrupted()` between tokens, prints its stats and, in `generate`, exits
//!   130); at the chat prompt, or while loading, it ends the process at once with exit code 130
//!   (llama-cli does the same: the first Ctrl-C interrupts the reply, the next one exits).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Exit code of a run ended by Ctrl-C (128 + SIGINT, what shells report).
pub const EXIT_INTERRUPTED: u8 = 130;

/// What Ctrl-C does now.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading, or at the chat prompt: exit at once.
    Exit = 0,
    /// Generating: ask the generation to stop.
    Generating = 1,
}

static PHASE: AtomicU8 = AtomicU8::new(Phase::Exit as u8);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Restore SIGPIPE's default action (end the process quietly on a write to a closed pipe).
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Install the Ctrl-C handler (once per process; later calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            // While generating, the first Ctrl-C asks the generation to stop (the caller sees
            // `interrupted()`); a second one before it has stopped exits, as at the prompt.
            let asked = INTERRUPTED.swap(true, Ordering::SeqCst);
            if exits(PHASE.load(Ordering::SeqCst), asked) {
                // A fresh line so the shell's prompt does not start after ours, then _exit as
                // llama-cli does: no atexit handlers or library destructors that could wait on
                // the main thread (it may be mid-load), nothing buffered to lose (text is
                // flushed as it is written).
                // SAFETY: write(2) and _exit(2) are async-signal-safe and take no locks.
                unsafe {
                    libc::write(2, b"\n".as_ptr().cast(), 1);
                    libc::_exit(EXIT_INTERRUPTED.into());
                }
            }
        });
    });
}

/// Whether a Ctrl-C in `phase` ends the process, given whether one has already asked the
/// generation to stop (`asked`): only the first Ctrl-C while generating does not.
fn exits(phase: u8, asked: bool) -> bool {
    phase != Phase::Generating as u8 || asked
}

/// Say what Ctrl-C does from now on; entering `Generating` clears an earlier interrupt.
pub fn set_phase(p: Phase) {
    if p == Phase::Generating {
        INTERRUPTED.store(false, Ordering::SeqCst);
    }
    PHASE.store(p as u8, Ordering::SeqCst);
}

/// Whether Ctrl-C was pressed since the generation began.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error a command returns when Ctrl-C ended it: main exits 130 without printing it.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

#[cfg(test)]
mod tests {
    use super::{exits, Phase};

    #[test]
    fn the_first_ctrl_c_while_generating_stops_it_any_other_exits() {
        assert!(!exits(Phase::Generating as u8, false));
        assert!(
            exits(Phase::Generating as u8, true),
            "a second Ctrl-C before the reply stopped"
        );
        assert!(exits(Phase::Exit as u8, false), "at the prompt or while loading");
        assert!(exits(Phase::Exit as u8, true));
    }
}
