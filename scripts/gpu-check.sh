#!/usr/bin/env bash
# Run tinfer's GPU checks from prebuilt binaries on a machine with a real GPU (no Rust toolchain
# or network needed there), and print a short table.
#
#   scripts/gpu-check.sh --package DIR   (on the build machine) build in release mode and copy
#                                        tinfer and the GPU test binaries into DIR
#   scripts/gpu-check.sh [LOGDIR]        (on the GPU machine, from the repository root) run them;
#                                        binaries from $TINFER_BIN_DIR (default: .gpucheck),
#                                        logs to LOGDIR (default: a new temporary folder)
#
# The tests run with TINFER_REQUIRE_GPU=1, so a missing adapter is a failure, not a skip. The
# SmolLM2 tests run only where models/smollm2-135m-instruct exists; otherwise they report
# SKIPPED and the generation check uses the tiny fixture model.
set -uo pipefail
cd "$(dirname "$0")/.."
TESTS=(wgsl gpu_kernels gpu_model)

if [ "${1:-}" = "--package" ]; then
    dest=${2:?usage: scripts/gpu-check.sh --package DIR}
    cargo build --release --locked || exit 1
    cargo test --release --locked --no-run --test wgsl --test gpu_kernels --test gpu_model || exit 1
    mkdir -p "$dest"
    cp target/release/tinfer "$dest/"
    for t in "${TESTS[@]}"; do
        bin=$(ls -t target/release/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -n1)
        [ -n "$bin" ] || { echo "no test binary for $t" >&2; exit 1; }
        cp "$bin" "$dest/$t"
    done
    echo "packaged into $dest: $(ls "$dest" | tr '\n' ' ')"
    exit 0
fi

bindir=${TINFER_BIN_DIR:-.gpucheck}
logs=${1:-$(mktemp -d)}
mkdir -p "$logs"
export TINFER_REQUIRE_GPU=1 TINFER_ROOT="$PWD"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
rows=()
fail=0

"$bindir/tinfer" info --device gpu --model tests/fixtures/tiny-llama-gqa >"$logs/info.txt" 2>&1
adapter=$(grep '^gpu ' "$logs/info.txt" | sed 's/^gpu *//')
rows+=("adapter|${adapter:-none (see info.txt)}")

for t in "${TESTS[@]}"; do
    start=$SECONDS
    "$bindir/$t" --test-threads 1 >"$logs/$t.log" 2>&1
    rc=$?
    secs=$((SECONDS - start))
    summary=$(grep -E '^test result:' "$logs/$t.log" | tail -n1 | sed 's/^test result: //; s/; finished.*//')
    skipped=$(grep -c SKIPPED "$logs/$t.log")
    [ $rc -eq 0 ] || fail=1
    rows+=("$t|rc=$rc ${summary:-no result} skipped=$skipped (${secs} s)")
done

model=tests/fixtures/tiny-llama-gqa
[ -f models/smollm2-135m-instruct/model.safetensors ] && model=models/smollm2-135m-instruct
for dev in gpu cpu; do
    # f32 on the GPU: its greedy text must equal the CPU's token for token
    out=$("$bindir/tinfer" generate --device $dev --dtype f32 --model "$model" --prompt "The capital of France is" -n 32 --temperature 0 2>"$logs/generate-$dev.err")
    rc=$?
    printf '%s' "$out" >"$logs/generate-$dev.txt"
    stats=$(grep -o 'prompt:.*' "$logs/generate-$dev.err" | tail -n1)
    [ $rc -eq 0 ] || fail=1
    rows+=("generate $dev ($(basename $model))|rc=$rc $stats")
done
if cmp -s "$logs/generate-gpu.txt" "$logs/generate-cpu.txt"; then same=yes; else same=NO; fail=1; fi
rows+=("gpu text == cpu text|$same")

# Whole-model speed with f16 weights (SmolLM2-135M shapes, random weights: no checkpoint needed),
# and the matrix kernels one by one.
"$bindir/tinfer" bench model --synthetic smollm2-135m --device gpu --dtype f16 --json --profile 64 \
    >"$logs/bench-model.json" 2>"$logs/bench-model.txt"
rc=$?
[ $rc -eq 0 ] || fail=1
tg=$(grep -o '"tg64": [0-9.e+-]*' "$logs/bench-model.json" | awk '{print $2}')
pp=$(grep -o '"pp512": [0-9.e+-]*' "$logs/bench-model.json" | awk '{print $2}')
ms=$(awk -v t="${tg:-0}" 'BEGIN { if (t > 0) printf "%.3f", 1000 / t; else print "?" }')
rows+=("bench model f16 (smollm2-135m shapes)|rc=$rc tg64 ${tg:-?} tok/s = $ms ms/token, pp512 ${pp:-?} tok/s")
"$bindir/tinfer" bench kernels >"$logs/bench-kernels.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || fail=1
rows+=("bench kernels|rc=$rc; table in bench-kernels.txt")

# Attention variants side by side (SmolLM2-like GQA, head_dim 64), with the targets' ratios.
"$bindir/tinfer" bench attention --layouts gqa --head-dims 64 --json --svg "$logs/attention.svg" \
    >"$logs/attention.json" 2>"$logs/attention.txt"
rc=$?
[ $rc -eq 0 ] || fail=1
rows+=("bench attention|rc=$rc; table in attention.txt")
while IFS= read -r line; do rows+=("  ${line%%:*}|${line#*: }"); done < <(grep -E '^(prefill|decode|KV pages)' "$logs/attention.txt")

echo
echo "tinfer gpu-check ($(date -u +%Y-%m-%dT%H:%MZ), logs in $logs)"
printf '%-38s %s\n' "check" "result"
for r in "${rows[@]}"; do printf '%-38s %s\n' "${r%%|*}" "${r#*|}"; done
exit $fail
