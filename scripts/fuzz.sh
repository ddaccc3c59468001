#!/usr/bin/env bash
# Fuzz the readers of untrusted input: scripts/fuzz.sh [SECONDS per target, default 60]
# Targets (fuzz/fuzz_targets/): gguf (GGUF reader, derived config/tokenizer, dequantisation),
# safetensors (header + tensor table + reads), config (config.json parsing and validation).
# Seeds come from fuzz/gen_corpus.rs (small files made on the spot, no real weights).
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain
# install nightly`). Crashes land in fuzz/artifacts/TARGET/; each one becomes a regression test in
# tests/. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
cargo +nightly run --quiet --release --bin gen-corpus
status=0
for t in gguf safetensors config; do
    echo "== $t for ${secs}s"
    log=$(mktemp)
    if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 2>&1 | tee "$log" | grep -E '^#[0-9]+ +(DONE|pulse)|crash|panicked|ERROR' | tail -n 3; then :; fi
    if grep -qE 'ERROR: libFuzzer|panicked' "$log"; then status=1; echo "!! $t found a failure: see fuzz/artifacts/$t/"; fi
    grep -E '^#[0-9]+ +DONE' "$log" | tail -n1 | sed "s/^/$t: /"
    rm -f "$log"
done
exit $status
