#!/usr/bin/env python3
"""Write a random PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, f32)
for a model, for benchmarks and trials: `tinfer info -m MODEL --json | scripts/random-lora.py OUT
--rank 16 --targets q_proj,k_proj,v_proj,o_proj`. A and B are N(0, std) (PEFT itself starts B at
zero; random B makes the update visible). numpy only.

Usage: tinfer info -m MODEL --json | scripts/random-lora.py OUT_DIR [--rank R] [--alpha A]
       [--targets q_proj,...|all] [--std S] [--seed N]
"""
import argparse, json, os, struct, sys

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--rank", type=int, default=8)
p.add_argument("--alpha", type=float, default=None, help="default: 2 x rank (scale 2)")
p.add_argument("--targets", default="q_proj,v_proj", help="comma-separated PEFT names, or all")
p.add_argument("--std", type=float, default=0.02)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
info = json.load(sys.stdin)
d, h, hd = info["dim"], info["hidden_dim"], info["head_dim"]
q, kv = info["n_heads"] * hd, info["n_kv_heads"] * hd
shapes = {"q_proj": ("self_attn", q, d), "k_proj": ("self_attn", kv, d), "v_proj": ("self_attn", kv, d),
          "o_proj": ("self_attn", d, q), "gate_proj": ("mlp", h, d), "up_proj": ("mlp", h, d),
          "down_proj": ("mlp", d, h)}
targets = list(shapes) if a.targets == "all" else a.targets.split(",")
rng = np.random.default_rng(a.seed)
tensors = {}
moe_layers = set((info.get("moe") or {}).get("moe_layers", []))
for layer in range(info["n_layers"]):
    for t in targets:
        part, out, inp = shapes[t]
        if part == "mlp" and layer in moe_layers:
            continue  # an MoE block has no dense MLP (tinfer does not adapt experts)
        m = f"base_model.model.model.layers.{layer}.{part}.{t}"
        tensors[f"{m}.lora_A.weight"] = rng.normal(0, a.std, (a.rank, inp)).astype("<f4")
        tensors[f"{m}.lora_B.weight"] = rng.normal(0, a.std, (out, a.rank)).astype("<f4")
header, offset = {}, 0
for name, t in tensors.items():
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
    offset += t.nbytes
head = json.dumps(header).encode()
head += b" " * (-len(head) % 8)
os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "adapter_model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head)
    for t in tensors.values():
        f.write(t.tobytes())
config = {"peft_type": "LORA", "r": a.rank, "lora_alpha": a.alpha or 2 * a.rank, "target_modules": targets,
          "bias": "none", "use_rslora": False, "use_dora": False, "modules_to_save": None, "fan_in_fan_out": False,
          "task_type": "CAUSAL_LM"}
with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
print(f"{a.out}: rank {a.rank} on {', '.join(targets)} of {info['n_layers']} layers", file=sys.stderr)
