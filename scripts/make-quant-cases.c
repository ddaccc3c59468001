// Test vectors for tinfer's quantizers (src/quant.rs): rows of awkward f32 data quantized by
// llama.cpp's own reference quantizers `quantize_row_q8_0_ref`, `quantize_row_q4_K_ref` and
// `quantize_row_q5_0_ref` (the fallback of Q4_K for rows that are not whole super-blocks)
// (ggml/src/ggml-quants.c), linked from a ggml checkout by scripts/make-quant-cases.sh.
// Writes JSON to stdout: {"cases": [{"name", "type", "x": [f32 bit patterns as hex], "hex"}]}.
// The inputs come from a fixed-seed generator (splitmix64 + Box-Muller), so reruns are identical.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-quants.h"

// ggml.c's helpers that ggml-quants.c refers to; the two reference quantizers call none of them.
void ggml_abort(const char *file, int line, const char *fmt, ...) { fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt); abort(); }
size_t ggml_row_size(enum ggml_type type, int64_t ne) { (void)type; (void)ne; abort(); }
const char *ggml_type_name(enum ggml_type type) { (void)type; abort(); }
size_t ggml_type_size(enum ggml_type type) { (void)type; abort(); }

static uint64_t state = 0x7153a5e5u;
static double uniform(void) { // splitmix64 -> [0, 1)
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}
static float normal(void) { return (float)(sqrt(-2.0 * log(1.0 - uniform())) * cos(6.283185307179586 * uniform())); }

static int first = 1;
static void emit(const char *name, const char *type, const float *x, int n) {
    int q8 = strcmp(type, "Q8_0") == 0, q5 = strcmp(type, "Q5_0") == 0;
    size_t nbytes = q8 ? (size_t)n / 32 * sizeof(block_q8_0)
                  : q5 ? (size_t)n / 32 * sizeof(block_q5_0)
                       : (size_t)n / 256 * sizeof(block_q4_K);
    uint8_t *y = calloc(nbytes, 1);
    if (q8) quantize_row_q8_0_ref(x, (block_q8_0 *)y, n);
    else if (q5) quantize_row_q5_0_ref(x, (block_q5_0 *)y, n);
    else quantize_row_q4_K_ref(x, (block_q4_K *)y, n);
    printf("%s\n{\"name\": \"%s\", \"type\": \"%s\", \"x\": [", first ? "" : ",", name, type);
    for (int i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        printf("%s\"%08x\"", i ? "," : "", b);
    }
    printf("], \"hex\": \"");
    for (size_t i = 0; i < nbytes; i++) printf("%02x", y[i]);
    printf("\"}");
    first = 0;
    free(y);
}

// One row of `n` values of kind `kind`, emitted for `type`.
static void row(const char *type, const char *kind, int n) {
    float *x = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) {
        float g = normal();
        if (!strcmp(kind, "normal")) x[i] = g;
        else if (!strcmp(kind, "weights")) x[i] = 0.02f * g; // the scale of real weights
        else if (!strcmp(kind, "outliers")) x[i] = (i % 37 == 5) ? 40.0f * g : 0.05f * g;
        else if (!strcmp(kind, "zero-blocks")) x[i] = ((i / 32) % 3 == 1) ? 0.0f : g;
        else if (!strcmp(kind, "constant")) x[i] = ((i / 32) % 2) ? -0.75f : 1.25f;
        else if (!strcmp(kind, "tiny")) x[i] = 1e-8f * g;
        else if (!strcmp(kind, "subnormal-d")) x[i] = 3e-6f * g; // f16 d subnormal or zero
        else if (!strcmp(kind, "negative")) x[i] = -fabsf(g) - 0.1f;
        else if (!strcmp(kind, "positive")) x[i] = fabsf(g) + 0.5f;
        else if (!strcmp(kind, "huge")) x[i] = 1e4f * g;
        else if (!strcmp(kind, "ties")) x[i] = (float)((int)(uniform() * 64) - 32) * 0.5f; // halves
        else if (!strcmp(kind, "grid")) x[i] = (float)(i % 16) / 15.0f + (i / 32) * 0.25f;
        else if (!strcmp(kind, "ramp")) x[i] = (float)i / (float)n - 0.3f;
        else if (!strcmp(kind, "sparse")) x[i] = (uniform() < 0.1) ? g : 0.0f;
        else if (!strcmp(kind, "mixed-scale")) x[i] = g * powf(10.0f, (float)((i / 32) % 8) - 6.0f); // sub-blocks 1e-6..10
        else { fprintf(stderr, "unknown kind %s\n", kind); exit(1); }
    }
    // ties for Q8_0: a block whose amax is 127 has d = 1, so every half lands on .5
    if (!strcmp(kind, "ties")) for (int b = 0; b < n; b += 32) x[b] = 127.0f * ((b / 32) % 2 ? -1 : 1) / 2 * 2;
    static int count = 0;
    char name[64];
    snprintf(name, sizeof name, "#%d %s %d", count++, kind, n);
    emit(name, type, x, n);
    free(x);
}

int main(int argc, char **argv) {
    const char *kinds[] = {"normal", "weights", "outliers", "zero-blocks", "constant", "tiny", "subnormal-d", "negative",
                           "positive", "huge", "ties", "grid", "ramp", "sparse", "mixed-scale"};
    int nk = sizeof kinds / sizeof kinds[0];
    printf("{\"source\": \"ggml-quants.c quantize_row_q8_0_ref / quantize_row_q4_K_ref / quantize_row_q5_0_ref via scripts/make-quant-cases.sh\", "
           "\"ggml_commit\": \"%s\", \"cases\": [", argc > 1 ? argv[1] : "unknown");
    for (int k = 0; k < nk; k++) row("Q8_0", kinds[k], 32 * (1 + k % 4));
    for (int k = 0; k < nk; k++) row("Q4_K", kinds[k], 256 * (1 + k % 2));
    for (int r = 0; r < 4; r++) row("Q4_K", "weights", 512); // more real-looking blocks
    for (int k = 0; k < nk; k++) row("Q5_0", kinds[k], 32 * (1 + k % 4)); // Q4_K's fallback
    printf("\n]}\n");
    return 0;
}
