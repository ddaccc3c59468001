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
# Needs on the GPU machine: glibc >= 2.35, the GPU driver's Vulkan ICD and the Vulkan loader
# (README, "Running on a GPU"), and the repository's tracked files (tests/fixtures, shaders).
# The tests run with TINFER_REQUIRE_GPU=1, so a missing adapter is a failure, not a skip. The
# SmolLM2 tests run only where models/smollm2-135m-instruct exists; otherwise they report
# SKIPPED and the generation check uses the tiny fixture model.
set -uo pipefail
cd "$(dirname "$0")/.."
# TINFER_GPU_CHECK_TESTS: the test binaries to run (default all four; a rerun can name fewer)
read -ra TESTS <<<"${TINFER_GPU_CHECK_TESTS:-wgsl gpu_kernels gpu_model shapes}"
ALL_TESTS=(wgsl gpu_kernels gpu_model shapes)

if [ "${1:-}" = "--package" ]; then
    dest=${2:?usage: scripts/gpu-check.sh --package DIR}
    cargo build --release --locked || exit 1
    cargo test --release --locked --no-run --test wgsl --test gpu_kernels --test gpu_model --test shapes || exit 1
    mkdir -p "$dest"
    cp target/release/tinfer "$dest/"
    for t in "${ALL_TESTS[@]}"; do
        bin=$(ls -t target/release/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -n1)
        [ -n "$bin" ] || { echo "no test binary for $t" >&2; exit 1; }
        cp "$bin" "$dest/$t"
    done
    # stripped and gzipped (about 5 MB each) so that they fit a 64 MiB transfer; unpacked below
    for f in "$dest"/*; do
        [ "${f%.gz}" = "$f" ] || continue
        command -v strip >/dev/null && strip "$f"
        gzip -9 -f "$f"
    done
    echo "packaged into $dest: $(ls "$dest" | tr '\n' ' ')($(du -sh "$dest" | cut -f1))"
    exit 0
fi

bindir=${TINFER_BIN_DIR:-.gpucheck}
for f in "$bindir"/*.gz; do [ -e "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
logs=${1:-$(mktemp -d)}
mkdir -p "$logs"
export TINFER_REQUIRE_GPU=1 TINFER_ROOT="$PWD"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
rows=()
fail=0

"$bindir/tinfer" info --device gpu --model tests/fixtures/tiny-llama-gqa >"$logs/info.txt" 2>&1
adapter=$(grep '^gpu ' "$logs/info.txt" | grep -v '^gpu weights' | head -n1 | sed 's/^gpu *//')
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

# Whole-model speed at the defaults (on a GPU: the split GEMV, the tiled GEMM, attention with
# head_dim across lanes, an f16 KV cache, 8 greedy decode steps a submit): SmolLM2-135M
# f16 (random weights with its shapes: no checkpoint needed; target <= 1 ms/token), the real
# SmolLM2 and Qwen2.5-Coder GGUFs where models/ has them (blocks as stored), and 8 of the 32
# layers of a Llama-3-8B shape (its bytes per token over its time: the bandwidth it reaches).
bench() { # label, then bench model's arguments
    local label=$1 file=$logs/bench-$(echo "$1" | tr -c 'a-zA-Z0-9.\n-' '_').json
    shift
    "$bindir/tinfer" bench model --device gpu --json "$@" >"$file" 2>"${file%.json}.txt"
    local rc=$?
    [ $rc -eq 0 ] || fail=1
    local tg pp bytes
    tg=$(grep -o '"tg[0-9]*": [0-9.e+-]*' "$file" | head -n1 | awk '{print $2}')
    pp=$(grep -o '"pp[0-9]*": [0-9.e+-]*' "$file" | head -n1 | awk '{print $2}')
    bytes=$(grep -o '"bytes_per_token": [0-9]*' "$file" | awk '{print $2}')
    rows+=("$label|rc=$rc $(awk -v t="${tg:-0}" -v p="${pp:-0}" -v b="${bytes:-0}" 'BEGIN { if (t > 0) printf "decode %.1f tok/s = %.3f ms/token, %.0f GB/s of weights; prefill %.0f tok/s", t, 1000 / t, b * t / 1e9, p; else print "?" }')")
}
bench "smollm2-135m f16 (synthetic)" --synthetic smollm2-135m --dtype f16 --pp 512 --tg 64 --profile 64
# the same with a submit and a readback per token, and with the lavapipe-shaped kernels
bench "  ... --decode-ahead 1" --synthetic smollm2-135m --dtype f16 --pp 512 --tg 64 --decode-ahead 1
bench "  ... rows/rows/whole kernels" --synthetic smollm2-135m --dtype f16 --pp 512 --tg 64 --gemv rows --gemm rows --head-split whole
[ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] && bench "smollm2-135m Q4_1 gguf" --model models/SmolLM2-135M-Instruct.Q4_1.gguf --pp 512 --tg 64
qwen=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
if [ -f $qwen ]; then
    bench "qwen2.5-coder-0.5b Q4_K_M gguf" --model $qwen --pp 512 --tg 64
else
    bench "qwen2.5-0.5b f16 (synthetic)" --synthetic qwen2.5-0.5b --dtype f16 --pp 512 --tg 64
fi
# TINFER_GPU_CHECK_8B_LAYERS: how many of its layers (default 8: 2.8 G random weights, 11 GB of host memory)
l8=${TINFER_GPU_CHECK_8B_LAYERS:-8}
bench "llama-3-8b f16 (synthetic, $l8 layers)" --synthetic llama-3-8b --layers "$l8" --dtype f16 --pp 512 --tg 32
bench "  ... --head-split whole" --synthetic llama-3-8b --layers "$l8" --dtype f16 --pp 512 --tg 32 --head-split whole
# The GEMVs one by one at Qwen2.5-0.5B's shapes, against the device's copy bandwidth (target:
# 50% or more for the split GEMV).
"$bindir/tinfer" bench kernels --shapes qwen2.5-0.5b >"$logs/bench-kernels-qwen.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || fail=1
rows+=("bench kernels qwen2.5-0.5b|rc=$rc; $(grep -o '[a-z]* memory ([^)]*) bandwidth: [0-9.]* GB/s' "$logs/bench-kernels-qwen.txt" | head -n1)")
while IFS= read -r line; do rows+=("  ${line%%|*}|${line#*|}"); done < <(awk '$1 == "matvec" && ($3 == "split" || $3 == "subgroups") { printf "%s %s %s %s|%s GB/s = %s%% of the copy bandwidth\n", $1, $2, $3, $4, $9, $11 }' "$logs/bench-kernels-qwen.txt")
# and the prompt GEMMs (64 tokens): tiled against the lavapipe-shaped one, in GFLOP/s
while IFS= read -r line; do rows+=("  ${line%%|*}|${line#*|}"); done < <(awk '$1 == "to_texture+matmat" && ($3 == "tiled" || $3 == "subgroups") { printf "matmat %s %s %s|%s GFLOP/s\n", $2, $3, $4, $10 }' "$logs/bench-kernels-qwen.txt")
"$bindir/tinfer" bench kernels >"$logs/bench-kernels.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || fail=1
rows+=("bench kernels|rc=$rc; table in bench-kernels.txt")

# Attention variants side by side (GQA, head_dim 64 and 128), with the targets' ratios.
"$bindir/tinfer" bench attention --layouts gqa --head-dims 64,128 --json --svg "$logs/attention.svg" \
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
