#!/usr/bin/env bash
# Fuzz the readers of untrusted input: scripts/fuzz.sh [SECONDS per target, default 60]
# Targets (fuzz/fuzz_targets/): gguf (GGUF reader, derived config/tokenizer, dequantisation),
# safetensors (header + tensor table + reads), config (config.json parsing and validation),
# tokenizer (tokenizer.json loading, encode/decode; chat template rendering).
# Seeds come from fuzz/gen_corpus.rs (small files made on the spot, no real weights). The four
# targets run in parallel, each for SECONDS.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain
# install nightly`). Crashes land in fuzz/artifacts/TARGET/; each one becomes a regression test in
# tests/. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
cargo +nightly fuzz build
"target/$(rustc -vV | sed -n 's/^host: //p')/release/gen-corpus"
# The targets run side by side, each for SECONDS; logs in fuzz/logs/.
mkdir -p logs
for t in gguf safetensors config tokenizer; do
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"logs/$t.log" 2>&1 &
done
wait
status=0
for t in gguf safetensors config tokenizer; do
    if grep -qE 'ERROR: libFuzzer|panicked|Test unit written' "logs/$t.log"; then status=1; echo "!! $t found a failure: see fuzz/artifacts/$t/ and fuzz/logs/$t.log"; fi
    echo "$t: $(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$t.log" | tail -n1)"
done
exit $status
