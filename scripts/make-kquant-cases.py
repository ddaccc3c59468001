#!/usr/bin/env python3
"""Test vectors for tinfer's block decoders (tests/fixtures/kquants.json).

Two sources, both independent of tinfer:
- "real": the first blocks of one tensor per type of Qwen2.5-Coder-0.5B-Instruct Q4_K_M, with the
  values llama.cpp decodes (../shared/golden/qwen2.5-coder-0.5b/dequant.json, made by the team's
  reference run: bit exact against the HF f32 checkpoint and gguf-py);
- "random": random blocks of every type (f16 scales finite) decoded by gguf-py's numpy
  `gguf.quants.dequantize` (pip install gguf), for the types no real file here holds (Q5_1, Q5_K, Q2_K, Q3_K).
Values are stored as f32 bit patterns so the comparison is exact.
"""
import json, os, struct, sys
import numpy as np
from gguf import GGMLQuantizationType as T, quants

ROOT = os.path.join(os.path.dirname(__file__), "..")
GOLDEN = os.path.join(ROOT, "..", "shared", "golden", "qwen2.5-coder-0.5b", "dequant.json")
BLOCK = {"Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210), "Q2_K": (256, 84), "Q3_K": (256, 110)}
F16_AT = {"Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "Q2_K": [80, 82], "Q3_K": [108]}

def bits(values):
    return [struct.unpack("<I", struct.pack("<f", float(v)))[0] for v in values]

cases = []
golden = json.load(open(GOLDEN))
seen = set()
for name, t in golden["tensors"].items():
    ty = t["ggml_type"]
    if ty not in BLOCK or ty in seen:
        continue
    seen.add(ty)
    raw = b"".join(bytes.fromhex(h) for h in t["first_blocks_hex"])
    cases.append({"source": f"real: {name}", "type": ty, "hex": raw.hex(), "bits": bits(t["first_blocks_dequant"])})

rng = np.random.default_rng(14)
for ty, (be, bb) in BLOCK.items():
    raw = bytearray(rng.integers(0, 256, size=3 * bb, dtype=np.uint8).tobytes())
    for b in range(3):
        for at in F16_AT[ty]:
            raw[b * bb + at: b * bb + at + 2] = np.float16(rng.uniform(-0.05, 0.05)).tobytes()
    values = quants.dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), getattr(T, ty)).astype(np.float32)
    cases.append({"source": "random, decoded by gguf-py", "type": ty, "hex": bytes(raw).hex(), "bits": bits(values.ravel())})

out = os.path.join(ROOT, "tests", "fixtures", "kquants.json")
json.dump({"cases": cases}, open(out, "w"))
print(f"wrote {len(cases)} cases to {out}", file=sys.stderr)
