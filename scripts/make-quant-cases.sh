#!/usr/bin/env bash
# Regenerates tests/fixtures/quant_cases.json: llama.cpp's reference quantizers
# (quantize_row_q8_0_ref, quantize_row_q4_K_ref, quantize_row_q5_0_ref) on the rows of scripts/make-quant-cases.c.
# Usage: [GGML_COMMIT=sha] scripts/make-quant-cases.sh GGML_DIR
#   GGML_DIR: a ggml checkout (github.com/ggml-org/ggml) or llama.cpp's ggml/ folder; its src/ and
#   include/ are used in place, nothing of it is copied here.
# Built as llama.cpp builds ggml-base on x86-64: -O2 -DNDEBUG, no -march (so no FMA), and
# -ffp-contract=off so the result is plain IEEE single precision on any machine. This matters:
# built with -mfma (gcc contracts a*b+c into FMA by default, as it would on aarch64), 5 of the 34
# cases come out different, all Q4_K (make_qkx2_quants' sums and errors).
set -euo pipefail
ggml="${1:?usage: $0 GGML_DIR}"
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
flags=(-O2 -DNDEBUG -ffp-contract=off -I"$ggml/src" -I"$ggml/include" -I"$ggml/src/ggml-cpu")
gcc "${flags[@]}" -c "$ggml/src/ggml-quants.c" -o "$tmp/ggml-quants.o"
gcc "${flags[@]}" scripts/make-quant-cases.c "$tmp/ggml-quants.o" -lm -o "$tmp/make-quant-cases"
commit="${GGML_COMMIT:-$(git -C "$ggml" rev-parse HEAD 2>/dev/null || echo unknown)}"
"$tmp/make-quant-cases" "$commit" > tests/fixtures/quant_cases.json
echo "wrote tests/fixtures/quant_cases.json ($(wc -c < tests/fixtures/quant_cases.json) bytes)" >&2
