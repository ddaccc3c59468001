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
# SKIPPED and the generation check uses the tiny fixture model. The real GGUFs are benchmarked
# where models/ or the data directory of scripts/fetch-model.sh ($TINFER_DATA_DIR/models, else
# ~/.local/share/tinfer/models) has them.
#
# It refuses to run on a CPU adapter (llvmpipe, SwiftShader: the GPU's Vulkan driver is missing;
# TINFER_GPU_CHECK_ALLOW_CPU=1 runs anyway). Each row of the table is printed as it finishes and
# kept in LOGDIR/summary.txt, so a run cut short still shows what it did; LOGDIR holds about 25
# files, so bring it back as one archive (tar czf).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --package) ;;
    -*) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
esac
# TINFER_GPU_CHECK_TESTS: the test binaries to run, separated by spaces or commas (default all
# four; a rerun can name fewer)
read -ra TESTS <<<"$(echo "${TINFER_GPU_CHECK_TESTS:-wgsl gpu_kernels gpu_model shapes}" | tr ',' ' ')"
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
for b in tinfer "${TESTS[@]}"; do
    [ -x "$bindir/$b" ] || { echo "gpu-check: no binary $bindir/$b: run scripts/gpu-check.sh --package $bindir on the build machine first" >&2; exit 2; }
done
logs=${1:-$(mktemp -d)}
mkdir -p "$logs"
: >"$logs/summary.txt"
echo "gpu-check: logs and summary.txt in $logs"
export TINFER_REQUIRE_GPU=1 TINFER_ROOT="$PWD"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
rows=()
fail=0
row() { # "check|result": kept for the table, printed now
    rows+=("$1")
    printf '%-38s %s\n' "${1%%|*}" "${1#*|}" | tee -a "$logs/summary.txt"
}
data="${TINFER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/tinfer}/models"
model_file() { # the first of models/NAME and the data directory's NAME that exists
    for d in models "$data"; do [ -e "$d/$1" ] && { echo "$d/$1"; return; }; done
}

"$bindir/tinfer" info --device gpu --model tests/fixtures/tiny-llama-gqa >"$logs/info.txt" 2>&1
adapter=$(grep -E '^gpu {2,}' "$logs/info.txt" | head -n1 | sed 's/^gpu *//')
row "adapter|${adapter:-none (see $logs/info.txt)}"
if echo "$adapter" | grep -qiE 'llvmpipe|lavapipe|swiftshader|\(Cpu,' && [ -z "${TINFER_GPU_CHECK_ALLOW_CPU:-}" ]; then
    echo "gpu-check: the adapter is a CPU one ($adapter): install the GPU's Vulkan driver (README, \"Running on a GPU\"), or set TINFER_GPU_CHECK_ALLOW_CPU=1" >&2
    exit 2
fi

for t in "${TESTS[@]}"; do
    start=$SECONDS
    "$bindir/$t" --test-threads 1 >"$logs/$t.log" 2>&1
    rc=$?
    secs=$((SECONDS - start))
    summary=$(grep -E '^test result:' "$logs/$t.log" | tail -n1 | sed 's/^test result: //; s/; finished.*//')
    skipped=$(grep -c SKIPPED "$logs/$t.log")
    [ $rc -eq 0 ] || fail=1
    row "$t|rc=$rc ${summary:-no result} skipped=$skipped (${secs} s)"
done

model=$(model_file smollm2-135m-instruct)
[ -f "$model/model.safetensors" ] || model=tests/fixtures/tiny-llama-gqa
for dev in gpu cpu; do
    # f32 on the GPU: its greedy text must equal the CPU's token for token
    out=$("$bindir/tinfer" generate --device $dev --dtype f32 --model "$model" --prompt "The capital of France is" -n 32 --temperature 0 2>"$logs/generate-$dev.err")
    rc=$?
    printf '%s' "$out" >"$logs/generate-$dev.txt"
    stats=$(grep -o 'prompt:.*' "$logs/generate-$dev.err" | tail -n1)
    [ $rc -eq 0 ] || fail=1
    row "generate $dev ($(basename "$model"))|rc=$rc $stats"
done
if cmp -s "$logs/generate-gpu.txt" "$logs/generate-cpu.txt"; then same=yes; else same=NO; fail=1; fi
row "gpu text == cpu text|$same"

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
    row "$label|rc=$rc $(awk -v t="${tg:-0}" -v p="${pp:-0}" -v b="${bytes:-0}" 'BEGIN { if (t > 0) printf "decode %.1f tok/s = %.3f ms/token, %.0f GB/s of weights; prefill %.0f tok/s", t, 1000 / t, b * t / 1e9, p; else print "?" }')"
}
bench "smollm2-135m f16 (synthetic)" --synthetic smollm2-135m --dtype f16 --pp 512 --tg 64 --profile 64
# the same with a submit and a readback per token, and with the lavapipe-shaped kernels
bench "  ... --decode-ahead 1" --synthetic smollm2-135m --dtype f16 --pp 512 --tg 64 --decode-ahead 1
bench "  ... rows/rows/whole kernels" --synthetic smollm2-135m --dtype f16 --pp 512 --tg 64 --gemv rows --gemm rows --head-split whole
q41=$(model_file SmolLM2-135M-Instruct.Q4_1.gguf)
[ -n "$q41" ] && bench "smollm2-135m Q4_1 gguf" --model "$q41" --pp 512 --tg 64
qwen=$(model_file qwen2.5-coder-0.5b-instruct-q4_k_m.gguf)
if [ -n "$qwen" ]; then
    bench "qwen2.5-coder-0.5b Q4_K_M gguf" --model "$qwen" --pp 512 --tg 64
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
row "bench kernels qwen2.5-0.5b|rc=$rc; $(grep -o '[a-z]* memory ([^)]*) bandwidth: [0-9.]* GB/s' "$logs/bench-kernels-qwen.txt" | head -n1)"
while IFS= read -r line; do row "  $line"; done < <(awk '$1 == "matvec" && ($3 == "split" || $3 == "subgroups") { printf "%s %s %s %s|%s GB/s = %s%% of the copy bandwidth\n", $1, $2, $3, $4, $9, $11 }' "$logs/bench-kernels-qwen.txt")
# and the prompt GEMMs (64 tokens): tiled against the lavapipe-shaped one, in GFLOP/s
while IFS= read -r line; do row "  $line"; done < <(awk '$1 == "to_texture+matmat" && ($3 == "tiled" || $3 == "subgroups") { printf "matmat %s %s %s|%s GFLOP/s\n", $2, $3, $4, $10 }' "$logs/bench-kernels-qwen.txt")
"$bindir/tinfer" bench kernels >"$logs/bench-kernels.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || fail=1
row "bench kernels|rc=$rc; table in bench-kernels.txt"

# Attention variants side by side (GQA, head_dim 64 and 128), with the targets' ratios.
"$bindir/tinfer" bench attention --layouts gqa --head-dims 64,128 --json --svg "$logs/attention.svg" \
    >"$logs/attention.json" 2>"$logs/attention.txt"
rc=$?
[ $rc -eq 0 ] || fail=1
row "bench attention|rc=$rc; table in attention.txt"
while IFS= read -r line; do row "  ${line%%:*}|${line#*: }"; done < <(grep -E '^(prefill|decode|KV pages)' "$logs/attention.txt")

echo
echo "tinfer gpu-check ($(date -u +%Y-%m-%dT%H:%MZ), logs in $logs)"
printf '%-38s %s\n' "check" "result"
for r in "${rows[@]}"; do printf '%-38s %s\n' "${r%%|*}" "${r#*|}"; done
exit $fail
