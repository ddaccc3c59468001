#!/usr/bin/env bash
# compare-llamacpp.sh: llama.cpp's llama-bench and `tinfer bench model` on the same model, the
# same machine and the same Vulkan adapter, in one run, with the ratios. Not part of CI.
#
#   scripts/compare-llamacpp.sh [--build-only] [--reps N]
#
# What it does, in order (a stranger can read it top to bottom):
#   1. fetches the PyPI sdist of llama-cpp-python==0.3.36 (it vendors llama.cpp with llama-bench
#      and the Vulkan backend), checks its sha256, and unpacks it into the cache;
#   2. installs what the builds need (cmake, glslc, libvulkan-dev, lavapipe) when run as root;
#   3. builds llama.cpp twice with cmake, once for the CPU and once with -DGGML_VULKAN=ON. Debian
#      12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings, so the copy in the cache gets
#      a guard around its one use. Builds are cached in $TINFER_LLAMACPP_CACHE
#      (default ~/.cache/tinfer-llamacpp), outside the repository, and reused;
#   4. makes an F16 GGUF of SmolLM2-135M-Instruct with llama.cpp's own llama-quantize from the
#      Q4_1 GGUF that scripts/fetch-model.sh fetched (so both engines run the same weights);
#   5. runs llama-bench (pp128, pp512, tg64; CPU with all cores; Vulkan on the lavapipe adapter,
#      which llama.cpp skips unless GGML_VK_VISIBLE_DEVICES=0) and `tinfer bench model` (CPU and
#      GPU, f16), then prints one table with tokens/s and the ratios.
#
# Everything it prints is also written to $OUT (default target/compare-llamacpp/).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE=${TINFER_LLAMACPP_CACHE:-$HOME/.cache/tinfer-llamacpp}
OUT=${OUT:-target/compare-llamacpp}
REPS=3
BUILD_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1 ;;
    --reps) REPS=$2; shift ;;
    *) echo "usage: $0 [--build-only] [--reps N]" >&2; exit 1 ;;
  esac
  shift
done
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
  if [ ! -x "$dir/bin/llama-bench" ] || [ ! -x "$dir/bin/llama-quantize" ]; then
    echo "building llama.cpp ($1) in $dir ..."
    cmake -S "$SRC" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON "${@:2}" >"$dir.cmake.log" 2>&1 \
      || { grep -A12 "CMake Error" "$dir.cmake.log" | head -30; exit 1; }
    cmake --build "$dir" -j "$JOBS" --target llama-bench llama-quantize >"$dir.build.log" 2>&1 \
      || { tail -30 "$dir.build.log"; exit 1; }
  fi
}
build cpu -DGGML_VULKAN=OFF
build vulkan -DGGML_VULKAN=ON
[ "$BUILD_ONLY" = 1 ] && { echo "builds ready in $CACHE"; exit 0; }

# 4. the model, F16, from the same Q4_1 file tinfer converts
Q41=$(ls models/*.gguf 2>/dev/null | head -1 || true)
if [ -z "$Q41" ]; then
  scripts/fetch-model.sh >/dev/null
  Q41=$(ls models/*.gguf | head -1)
fi
F16=$CACHE/smollm2-135m-instruct-f16.gguf
[ -f "$F16" ] || "$CACHE/build-cpu/bin/llama-quantize" --allow-requantize "$Q41" "$F16" F16 >"$OUT/quantize.log" 2>&1
cargo build --release --quiet
TINFER=target/release/tinfer
MODEL_DIR=models/smollm2-135m-instruct
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

# 5. the runs, one after the other on an otherwise idle machine
echo "llama.cpp CPU ..."
"$CACHE/build-cpu/bin/llama-bench" -m "$F16" -p 128,512 -n 64 -t "$JOBS" -r "$REPS" -o json >"$OUT/llamacpp-cpu.json" 2>"$OUT/llamacpp-cpu.log"
echo "llama.cpp Vulkan (lavapipe) ..."
GGML_VK_VISIBLE_DEVICES=0 "$CACHE/build-vulkan/bin/llama-bench" -m "$F16" -p 128,512 -n 64 -ngl 99 -r "$REPS" -o json \
  >"$OUT/llamacpp-vulkan.json" 2>"$OUT/llamacpp-vulkan.log"
echo "tinfer CPU ..."
"$TINFER" bench model --model "$MODEL_DIR" --device cpu --repeats "$REPS" --json >"$OUT/tinfer-cpu.json" 2>"$OUT/tinfer-cpu.log"
echo "tinfer GPU (lavapipe), f16 ..."
"$TINFER" bench model --model "$MODEL_DIR" --device gpu --adapter llvmpipe --dtype f16 --repeats "$REPS" --json \
  >"$OUT/tinfer-gpu.json" 2>"$OUT/tinfer-gpu.log"

python3 - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, sys
out = sys.argv[1]
def llama(name):
    rows = json.load(open(f"{out}/{name}.json"))
    r = {}
    for row in rows:
        key = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
        r[key] = row["avg_ts"]
        r["backend"] = row.get("backends", row.get("backend", "?"))
        r["gpu"] = row.get("gpu_info", "")
    return r
def tinfer(name):
    return json.load(open(f"{out}/{name}.json"))
lc, lv = llama("llamacpp-cpu"), llama("llamacpp-vulkan")
tc, tg = tinfer("tinfer-cpu"), tinfer("tinfer-gpu")
print(f"adapter: {tg['adapter']}; llama.cpp Vulkan device: {lv['gpu'] or 'see llamacpp-vulkan.log'}\n")
print("| test | llama.cpp CPU f16 | llama.cpp Vulkan f16 | tinfer CPU f32 | tinfer GPU f16 | tinfer GPU / llama.cpp Vulkan | tinfer GPU / llama.cpp CPU |")
print("|---|---|---|---|---|---|---|")
for t in ["pp128", "pp512", "tg64"]:
    a, b, c, d = lc[t], lv[t], tc[t], tg[t]
    print(f"| {t} | {a:.1f} | {b:.2f} | {c:.1f} | {d:.1f} | {d / b:.1f}x | {d / a:.2f}x |")
print(f"\ntokens/s (llama-bench avg_ts; tinfer medians). tinfer GPU: {tg['dispatches_per_token']} dispatches/token, {tg['bytes_per_token'] / 1e6:.0f} MB/token.")
EOF
