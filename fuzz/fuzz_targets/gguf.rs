//! The GGUF reader on arbitrary bytes: parsing, the derived HF config and tokenizer, and
//! dequantisation of every (small enough) tensor must return errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinfer::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::from_bytes(data.to_vec()) else { return };
    for t in &g.tensors {
        if t.n_bytes <= 1 << 20 {
            assert_eq!(g.dequantize(t).len() as u64, t.n_elements());
        }
    }
    let _ = g.hf_tokenizer_json();
    let _ = g.hf_tokenizer_config(0);
    let _ = g.hf_generation_config();
    let Ok(cfg) = g.hf_config() else { return };
    if let Ok(tensors) = g.hf_tensors() {
        for (_, t) in tensors {
            if t.n_bytes <= 1 << 20 {
                let _ = g.hf_tensor_data(t, &cfg);
            }
        }
    }
});
