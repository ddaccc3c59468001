//! The safetensors loader on arbitrary bytes (header and tensor table): opening the file and
//! reading every tensor must return errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinfer::loader::{Safetensors, TensorSource};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("tinfer-fuzz-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), data).unwrap();
    if let Ok(st) = Safetensors::open(&dir) {
        for (name, shape) in st.shapes() {
            if shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|n| n <= 1 << 20)
            {
                if let Ok(t) = st.load(&name) {
                    let _ = t.to_f32();
                }
            }
        }
        let _ = st.dtypes();
    }
});
