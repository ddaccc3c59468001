#!/usr/bin/env bash
# compare-llamacpp.sh: llama.cpp's llama-bench and `tinfer bench model` on the same GGUF file, the
# same machine and the same Vulkan adapter, in one run, with the ratios. Not part of CI.
#
#   scripts/compare-llamacpp.sh [--model FILE.gguf] [--pp 128,512] [--tg 64] [--kl TEXT] [--ctx N]
#                               [--build-only] [--reps N]
#
# What it does, in order (a stranger can read it top to bottom):
#   1. fetches the PyPI sdist of llama-cpp-python==0.3.36 (it vendors llama.cpp with llama-bench
#      and the Vulkan backend), checks its sha256, and unpacks it into the cache;
#   2. installs what the builds need (cmake, glslc, libvulkan-dev, lavapipe) when run as root;
#   3. builds llama.cpp twice with cmake, once for the CPU and once with -DGGML_VULKAN=ON
#      (llama-bench, llama-quantize, llama-perplexity). Debian 12's Vulkan headers (1.3.239)
#      predate VK_EXT_layer_settings, so the copy in the cache gets a guard around its one use.
#      Builds are cached in $TINFER_LLAMACPP_CACHE (default ~/.cache/tinfer-llamacpp), outside
#      the repository, and reused;
#   4. takes the GGUF (default: the SmolLM2-135M-Instruct Q4_1 file of scripts/fetch-model.sh; any
#      GGUF tinfer runs, e.g. models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf) and makes an F16 copy
#      with llama.cpp's own llama-quantize (llama.cpp's f16 reference for the KL divergence);
#   5. runs llama-bench on the GGUF as stored (pp128, pp512, tg64 unless --pp / --tg say otherwise;
#      CPU with all cores; Vulkan on
#      the lavapipe adapter, which llama.cpp skips unless GGML_VK_VISIBLE_DEVICES=0) and `tinfer
#      bench model` on the same file (CPU; GPU with the blocks as stored, --dtype auto; GPU f16),
#      then prints one table with tokens/s, the ratios and the weight bytes per token;
#   6. with --kl TEXT: KL divergence on TEXT (windows of --ctx tokens, default 512, all of them):
#      every tinfer GPU dtype (as stored, f16, q8_0) against tinfer's f32 CPU run of the same file
#      (`perplexity --save-logits` / `--kl-base`), next to llama-perplexity's KL divergence of the
#      same file against its own F16 copy (llama-perplexity scores the second half of each window,
#      tinfer all of it: compare magnitudes, not digits).
#
# Everything it prints is also written to $OUT (default target/compare-llamacpp/).
set -euo pipefail

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE=${TINFER_LLAMACPP_CACHE:-$HOME/.cache/tinfer-llamacpp}
OUT=${OUT:-target/compare-llamacpp}
REPS=3
BUILD_ONLY=0
MODEL=
KL_TEXT=
CTX=512
PP=128,512
TG=64
usage() { echo "usage: $0 [--model FILE.gguf] [--pp 128,512] [--tg 64] [--kl TEXT] [--ctx N] [--build-only] [--reps N]" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1; shift; continue ;;
    --reps|--model|--kl|--ctx|--pp|--tg) [ $# -ge 2 ] || usage ;;
    *) usage ;;
  esac
  case "$1" in
    --reps) REPS=$2 ;;
    --model) MODEL=$(realpath -e -- "$2" 2>/dev/null) || { echo "no such GGUF: $2" >&2; exit 1; } ;;
    --kl) KL_TEXT=$(realpath -e -- "$2" 2>/dev/null) || { echo "no such text for --kl: $2" >&2; exit 1; } ;;
    --ctx) CTX=$2 ;;
    --pp) PP=$2 ;;
    --tg) TG=$2 ;;
  esac
  shift 2
done
cd "$(dirname "$0")/.." # paths given above are already absolute
mkdir -p "$CACHE" "$OUT"
JOBS=$(nproc)
SRC=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp

# 1. the source
if [ ! -d "$SRC" ]; then
  tarball=$CACHE/llama_cpp_python-$VERSION.tar.gz
  if [ ! -f "$tarball" ]; then
    # pip download would try to build the package's metadata; the index page gives the file.
    url=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ \
      | grep -o "https://[^\"#]*llama_cpp_python-$VERSION.tar.gz" | head -1)
    [ -n "$url" ] || { echo "cannot find llama-cpp-python $VERSION on PyPI" >&2; exit 1; }
    curl -fsSL -o "$tarball.part" "$url"
    mv "$tarball.part" "$tarball"
  fi
  echo "$SDIST_SHA256  $tarball" | sha256sum -c --quiet
  tar -xzf "$tarball" -C "$CACHE"
  # Debian 12's vulkan.hpp has no vk::LayerSettingEXT: guard its one use.
  python3 - "$SRC/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
start = s.index("    VkBool32 enable_best_practice = layer_settings;")
end_marker = "&layer_setting_info);\n"
end = s.index(end_marker, start) + len(end_marker)
guarded = ("#ifdef VK_EXT_layer_settings\n" + s[start:end] + "#else\n"
           "    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);\n"
           "#endif\n")
open(p, "w").write(s[:start] + guarded + s[end:])
EOF
fi

# 2. build tools
if [ "$(id -u)" = 0 ] && ! { command -v cmake && command -v glslc && [ -f /usr/include/vulkan/vulkan.hpp ] \
    && [ -d /usr/include/spirv ]; } >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq cmake glslc libvulkan-dev spirv-headers mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# 3. two builds, cached
build() { # name, extra cmake flags
  local dir=$CACHE/build-$1
  if [ ! -x "$dir/bin/llama-bench" ] || [ ! -x "$dir/bin/llama-quantize" ] || [ ! -x "$dir/bin/llama-perplexity" ]; then
    echo "building llama.cpp ($1) in $dir ..."
    cmake -S "$SRC" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF "${@:2}" >"$dir.cmake.log" 2>&1 \
      || { grep -A12 "CMake Error" "$dir.cmake.log" | head -30; exit 1; }
    cmake --build "$dir" -j "$JOBS" --target llama-bench llama-quantize llama-perplexity >"$dir.build.log" 2>&1 \
      || { tail -30 "$dir.build.log"; exit 1; }
  fi
}
# x86-64: every vector extension but AMX, whose tiles a VM may not grant (llama-bench then dies
# of SIGILL in tinygemm_kernel_amx with -march=native); elsewhere -march=native.
if [ "$(uname -m)" = x86_64 ]; then
  CPU_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
    -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON)
  grep -q avx512f /proc/cpuinfo || CPU_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
else
  CPU_FLAGS=(-DGGML_NATIVE=ON)
fi
build cpu-noamx -DGGML_VULKAN=OFF "${CPU_FLAGS[@]}"
build vulkan -DGGML_VULKAN=ON -DGGML_NATIVE=ON # all layers on the GPU (-ngl 99): no AMX kernel runs
[ "$BUILD_ONLY" = 1 ] && { echo "builds ready in $CACHE"; exit 0; }

# 4. the model as stored, and llama.cpp's F16 copy of it
if [ -z "$MODEL" ]; then
  MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$MODEL" ] || scripts/fetch-model.sh >/dev/null
fi
[ -f "$MODEL" ] || { echo "no such GGUF: $MODEL (scripts/fetch-model.sh NAME fetches the known ones)" >&2; exit 1; }
F16=$CACHE/$(basename "$MODEL" .gguf)-f16.gguf
[ -f "$F16" ] || "$CACHE/build-cpu-noamx/bin/llama-quantize" --allow-requantize "$MODEL" "$F16" F16 >"$OUT/quantize.log" 2>&1
cargo build --release --quiet
TINFER=target/release/tinfer
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
echo "model: $MODEL"

# 5. the runs, one after the other on an otherwise idle machine
echo "llama.cpp CPU ..."
"$CACHE/build-cpu-noamx/bin/llama-bench" -m "$MODEL" -p "$PP" -n "$TG" -t "$JOBS" -r "$REPS" -o json >"$OUT/llamacpp-cpu.json" 2>"$OUT/llamacpp-cpu.log"
echo "llama.cpp Vulkan (lavapipe) ..."
GGML_VK_VISIBLE_DEVICES=0 "$CACHE/build-vulkan/bin/llama-bench" -m "$MODEL" -p "$PP" -n "$TG" -ngl 99 -r "$REPS" -o json \
  >"$OUT/llamacpp-vulkan.json" 2>"$OUT/llamacpp-vulkan.log"
echo "tinfer CPU ..."
"$TINFER" bench model --model "$MODEL" --device cpu --pp "$PP" --tg "$TG" --repeats "$REPS" --json >"$OUT/tinfer-cpu.json" 2>"$OUT/tinfer-cpu.log"
for dt in auto f16; do
  echo "tinfer GPU (lavapipe), --dtype $dt ..."
  "$TINFER" bench model --model "$MODEL" --device gpu --adapter llvmpipe --dtype $dt --pp "$PP" --tg "$TG" --repeats "$REPS" --json \
    >"$OUT/tinfer-gpu-$dt.json" 2>"$OUT/tinfer-gpu-$dt.log"
done

python3 - "$OUT" "$MODEL" "$PP" "$TG" <<'EOF' | tee "$OUT/table.md"
import json, sys
out, model = sys.argv[1], sys.argv[2]
tests = [f"pp{p}" for p in sys.argv[3].split(",")] + [f"tg{t}" for t in sys.argv[4].split(",")]
def llama(name):
    rows = json.load(open(f"{out}/{name}.json"))
    r = {}
    for row in rows:
        key = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
        r[key] = row["avg_ts"]
        r["type"] = row.get("model_type", "")
        r["gpu"] = row.get("gpu_info", "")
    return r
def tinfer(name):
    return json.load(open(f"{out}/{name}.json"))
lc, lv = llama("llamacpp-cpu"), llama("llamacpp-vulkan")
tc, tq, th = tinfer("tinfer-cpu"), tinfer("tinfer-gpu-auto"), tinfer("tinfer-gpu-f16")
print(f"model: {model} ({lc['type']}); adapter: {tq['adapter']}; llama.cpp Vulkan device: {lv['gpu'] or 'see llamacpp-vulkan.log'}\n")
print(f"| test | llama.cpp CPU | llama.cpp Vulkan | tinfer CPU f32 | tinfer GPU {tq['dtype']} | tinfer GPU f16 | as stored / f16 | as stored / llama.cpp Vulkan | as stored / llama.cpp CPU |")
print("|---|---|---|---|---|---|---|---|---|")
for t in tests:
    a, b, c, d, e = lc[t], lv[t], tc[t], tq[t], th[t]
    print(f"| {t} | {a:.1f} | {b:.2f} | {c:.1f} | {d:.1f} | {e:.1f} | {d / e:.2f}x | {d / b:.1f}x | {d / a:.2f}x |")
print(f"\ntokens/s (llama-bench avg_ts over the repetitions; tinfer medians). Weights read per decoded token: "
      f"tinfer GPU {tq['dtype']} {tq['bytes_per_token'] / 1e6:.1f} MB, f16 {th['bytes_per_token'] / 1e6:.1f} MB, "
      f"CPU f32 {tc['bytes_per_token'] / 1e6:.1f} MB; {tq['dispatches_per_token']} dispatches per token.")
EOF

# 6. KL divergence on a text
[ -n "$KL_TEXT" ] || exit 0
echo "KL divergence on $KL_TEXT (windows of $CTX tokens) ..."
"$TINFER" perplexity --model "$MODEL" --device cpu -f "$KL_TEXT" --ctx "$CTX" --save-logits "$OUT/tinfer-cpu.kl" --json \
  >"$OUT/kl-tinfer-cpu.json" 2>"$OUT/kl-tinfer-cpu.log"
for dt in auto f16 q8_0; do
  echo "tinfer GPU --dtype $dt ..."
  "$TINFER" perplexity --model "$MODEL" --device gpu --adapter llvmpipe --dtype $dt -f "$KL_TEXT" --ctx "$CTX" \
    --kl-base "$OUT/tinfer-cpu.kl" --json >"$OUT/kl-tinfer-gpu-$dt.json" 2>"$OUT/kl-tinfer-gpu-$dt.log"
done
echo "llama-perplexity F16 base and the file as stored ..."
"$CACHE/build-cpu-noamx/bin/llama-perplexity" -m "$F16" -f "$KL_TEXT" -c "$CTX" -t "$JOBS" \
  --kl-divergence-base "$OUT/llamacpp-f16.kld" >"$OUT/kl-llamacpp-f16.log" 2>&1
"$CACHE/build-cpu-noamx/bin/llama-perplexity" -m "$MODEL" -f "$KL_TEXT" -c "$CTX" -t "$JOBS" \
  --kl-divergence-base "$OUT/llamacpp-f16.kld" --kl-divergence >"$OUT/kl-llamacpp.log" 2>&1
python3 - "$OUT" <<'EOF' | tee "$OUT/kl.md"
import json, re, sys
out = sys.argv[1]
print("| run | reference | mean KL | 99th pct KL | top-1 agreement | ppl |")
print("|---|---|---|---|---|---|")
base = json.load(open(f"{out}/kl-tinfer-cpu.json"))
print(f"| tinfer CPU f32 | - | - | - | - | {base['ppl']:.4f} |")
for dt in ["auto", "f16", "q8_0"]:
    j = json.load(open(f"{out}/kl-tinfer-gpu-{dt}.json"))
    k = j["kl"]
    print(f"| tinfer GPU --dtype {dt} | tinfer CPU f32 | {k['kl_mean']:.3g} | {k['kl_p99']:.3g} | {100 * k['top1_agreement']:.2f}% | {j['ppl']:.4f} |")
log = open(f"{out}/kl-llamacpp.log").read()
def grab(name):
    m = re.search(rf"^{name}\s*:\s*([-0-9.e+]+)", log, re.M)
    return m.group(1) if m else "?"
kl, p99, top, ppl = grab("Mean    KLD"), grab("99.0%   KLD"), grab("Same top p"), grab(r"Mean PPL\(Q\)")
print(f"| llama.cpp CPU, the file as stored | llama.cpp F16 | {kl} | {p99} | {top}% | {ppl} |")
EOF
