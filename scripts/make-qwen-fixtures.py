#!/usr/bin/env python3
"""Copy what the Qwen2.5-Coder tests read from ../shared/golden/qwen2.5-coder-0.5b into
tests/fixtures/qwen2.5-coder/ (run once by a developer; the tests never run Python).

A full logit row is 151,936 float32 (600 KB), so beyond the two prompts kept whole (py_is_prime,
chat_capital) each row is reduced, exactly (no rounding: float32 values written as the decimal
that reads back to the same float32):
  top_ids / top_values  the 20 largest logits,
  cols / sample         the values at 500 fixed columns (numpy default_rng(0), sorted, the same
                        for every row),
  logsumexp, mean       float64 over the whole row (the softmax normaliser: every logit enters it).
Files: index.json (the 8 shared prompts; the 6 new ones carry `last_logits_reduced`),
internals_logits.json (the 16-token internals prompt, all positions reduced),
argparse_2000.txt, argparse_2048.txt and long_context.json (perplexity and greedy goldens).
Usage: python3 scripts/make-qwen-fixtures.py [GOLDEN_DIR]"""
import json, os, shutil, sys

import numpy as np

here = os.path.dirname(__file__)
golden = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "golden", "qwen2.5-coder-0.5b")
out = os.path.join(here, "..", "tests", "fixtures", "qwen2.5-coder")
VOCAB, TOP, SAMPLE = 151936, 20, 500
cols = np.sort(np.random.default_rng(0).choice(VOCAB, SAMPLE, replace=False))


def f32(x):
    return [float(v) for v in np.asarray(x, dtype=np.float32)]


def reduce(row):
    row = np.asarray(row, dtype=np.float32)
    top = np.argsort(-row, kind="stable")[:TOP]
    r64 = row.astype(np.float64)
    m = r64.max()
    return {
        "cols": [int(c) for c in cols],
        "top_ids": [int(i) for i in top],
        "top_values": f32(row[top]),
        "sample": f32(row[cols]),
        "logsumexp": float(m + np.log(np.exp(r64 - m).sum())),
        "mean": float(r64.mean()),
    }


KEEP_WHOLE = {"py_is_prime", "chat_capital"}
idx = json.load(open(os.path.join(golden, "index.json")))
for p in idx["prompts"]:
    npy = os.path.join(golden, f"{p['name']}.last_logits.npy")
    if p["name"] in KEEP_WHOLE:
        shutil.copy(npy, out)
    else:
        p["last_logits_reduced"] = reduce(np.load(npy))
        p.pop("last_logits_npy", None)
json.dump(idx, open(os.path.join(out, "index.json"), "w"))

internals = json.load(open(os.path.join(golden, "internals.json")))
alll = np.load(os.path.join(golden, "internals", "all_position_logits.npy"))
assert alll.shape == (16, VOCAB)
json.dump(
    {
        "prompt": internals["prompt"],
        "text": internals["text"],
        "ids": internals["ids"],
        "all_position_logits": internals["all_position_logits"],
        "rows": [reduce(r) for r in alll],
    },
    open(os.path.join(out, "internals_logits.json"), "w"),
)

for f in ["argparse_2000.txt", "argparse_2048.txt"]:
    shutil.copy(os.path.join(golden, f), out)
lc = json.load(open(os.path.join(golden, "long_context.json")))
shutil.copy(os.path.join(golden, "long_context.json"), out)
