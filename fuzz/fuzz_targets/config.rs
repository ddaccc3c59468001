//! config.json parsing and validation on arbitrary text: a config that resolves must be safe to
//! build the RoPE table from (bounded sizes), and nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinfer::config::{HfConfig, RopeTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(hf) = HfConfig::from_json(text) else { return };
    let Ok(cfg) = hf.resolve() else { return };
    assert!(
        cfg.seq_len * cfg.head_dim <= 1 << 25,
        "resolve() let through an unbounded RoPE table"
    );
    let _ = cfg.n_params();
    if cfg.seq_len * cfg.head_dim <= 1 << 16 {
        let _ = RopeTable::new(&cfg);
    }
});
