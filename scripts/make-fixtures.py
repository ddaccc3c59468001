#!/usr/bin/env python3
"""Copy the parts of ../shared/golden that the tests read into tests/fixtures/ (run once by a
developer when the golden data changes; the tests never run Python). Trims JSON to what the
tests use so the fixtures stay small. Usage: python3 scripts/make-fixtures.py [GOLDEN_DIR]"""
import json, os, shutil, sys

golden = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "golden")
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
os.makedirs(out, exist_ok=True)

for name, prefix in [("tiny-llama-gqa", "tiny"), ("tiny-qwen2", "tiny_qwen2")]:
    src, dst = os.path.join(golden, name), os.path.join(out, name)
    os.makedirs(dst, exist_ok=True)
    for f in ["config.json", "generation_config.json", "model.safetensors"]:
        shutil.copy(os.path.join(src, f), dst)
    g = json.load(open(os.path.join(src, "golden.json")))
    trimmed = {"inputs": {}, "greedy_kv_cache": {}}
    for inp in ["random", "arange"]:
        shutil.copy(os.path.join(src, f"{prefix}.{inp}.logits.npy"), os.path.join(dst, f"{inp}.logits.npy"))
        trimmed["inputs"][inp] = {k: g["inputs"][inp][k] for k in ["ids", "argmax", "mean_nll"]}
    gk = g["greedy_kv_cache"]
    trimmed["greedy_kv_cache"] = {k: gk[k] for k in ["prompt_ids", "new_ids", "step_logits", "step_top1_minus_top2"]}
    json.dump(trimmed, open(os.path.join(dst, "golden.json"), "w"))

# A byte-level tokenizer (GPT-2's byte alphabet, id = byte, no merges) for the tiny models, so
# the CLI can run them; tests/tiny_models.rs checks it against the test helper's description.
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
byte_char = dict(zip(bs, cs))
tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": None,
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": {chr(byte_char[b]): b for b in range(256)}, "merges": []}}
for name in ["tiny-llama-gqa", "tiny-qwen2"]:
    json.dump(tokenizer, open(os.path.join(out, name, "tokenizer.json"), "w"), ensure_ascii=False, indent=1)

dst = os.path.join(out, "smollm2")
os.makedirs(dst, exist_ok=True)
idx = json.load(open(os.path.join(golden, "smollm2", "index.json")))
keep = ["name", "kind", "text", "messages", "ids", "decoded", "last_top10", "per_position_argmax",
        "mean_nll", "ppl", "n_scored", "greedy", "greedy_no_eos_stop", "expect"]
prompts = []
for p in idx["prompts"]:
    prompts.append({k: p[k] for k in keep if k in p})
    shutil.copy(os.path.join(golden, "smollm2", f"{p['name']}.last_logits.npy"), dst)
internals = json.load(open(os.path.join(golden, "smollm2", "internals.json")))
json.dump({"prompts": prompts, "rope_inv_freq": internals["rope_inv_freq"]}, open(os.path.join(dst, "index.json"), "w"))
for f in ["tokenizer_cases.json", "dequant.json"]:
    shutil.copy(os.path.join(golden, f), out)
print("fixtures written to", os.path.normpath(out))
