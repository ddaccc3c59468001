#!/usr/bin/env python3
"""Checks of `tinfer serve` with the real `openai` client and plain HTTP (urllib).

Run by scripts/test-serve-openai.sh, which starts the servers; by hand:

    serve_openai_check.py --url http://127.0.0.1:8080 [--queue-url URL_OF_A_--parallel_1_--queue_1_SERVER]
                          --bin target/release/tinfer --model smollm2-135m-instruct --device cpu
                          [--only name,name] [--list]

Each check prints one line, PASS / FAIL / SKIP, its name, its time and details (NOTE lines add
what is worth knowing but is not a failure). Exit status 1 when any check failed.
"""

import argparse
import array
import concurrent.futures as cf
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import openai

TIMEOUT = 120.0  # seconds, for every request

A = None  # the parsed arguments
CLIENT = None  # openai.OpenAI on the main server
MODEL_ID = None  # the id /v1/models gives
RESULTS = []  # (status, name)


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def note(msg):
    print(f"     NOTE {msg}", flush=True)


# ---- plain HTTP ----


def http(method, path, body=None, url=None, timeout=TIMEOUT, raw=None):
    """(status, headers, parsed JSON or text) of a request; body a dict (sent as JSON) or raw bytes."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request((url or A.url) + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", "Bearer anything")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, headers, text = r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        status, headers, text = e.code, dict(e.headers), e.read().decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


def metrics(url=None):
    """/metrics as {name: value} (samples without labels; a histogram's _sum and _count)."""
    status, _, text = http("GET", "/metrics", url=url)
    check(status == 200, f"/metrics answered {status}")
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and not m.group(2):
            out[m.group(1)] = float(m.group(3))
    return out


def prefix_metric(m):
    """The prefix-cache counter's name (one containing "prefix", preferring hit/token ones)."""
    names = [k for k in m if "prefix" in k]
    if not names:
        return None
    names.sort(key=lambda k: (not ("hit" in k and "token" in k), not k.endswith("_total"), k))
    return names[0]


def error_shape(body):
    """Problems with an OpenAI error body {"error": {"message", "type", "param", "code"}}."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return f"not an OpenAI error object: {str(body)[:200]}"
    e = body["error"]
    missing = [k for k in ("message", "type", "param", "code") if k not in e]
    if missing or not isinstance(e.get("message"), str) or not e["message"]:
        return f"error object lacks {missing or 'a message'}: {e}"
    return None


# ---- the openai client ----


def chat(messages, stream=False, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return CLIENT.chat.completions.create(model=MODEL_ID, messages=messages, stream=stream, **kw)


def complete(prompt, stream=False, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return CLIENT.completions.create(model=MODEL_ID, prompt=prompt, stream=stream, **kw)


def user(text):
    return [{"role": "user", "content": text}]


def collect_stream(stream, piece):
    """(texts by choice, finish reasons by choice, the usage chunk's usage or None, chunk count);
    piece(choice) is a chunk choice's text."""
    texts, reasons, usage, n = {}, {}, None, 0
    for c in stream:
        n += 1
        if c.usage is not None:
            check(not c.choices, f"the usage chunk has choices: {c}")
            usage = c.usage
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + (piece(ch) or "")
            if ch.finish_reason:
                reasons[ch.index] = ch.finish_reason
    return texts, reasons, usage, n


def collect_chat_stream(stream):
    return collect_stream(stream, lambda ch: ch.delta.content if ch.delta else None)


def collect_completion_stream(stream):
    return collect_stream(stream, lambda ch: ch.text)


def counts(u):
    """The token counts of a usage (cached_tokens differ between a first and a repeated prompt)."""
    return (u.prompt_tokens, u.completion_tokens, u.total_tokens)


def check_usage(u, max_tokens=None, what=""):
    check(u is not None, f"{what}: no usage")
    check(u.prompt_tokens > 0, f"{what}: usage.prompt_tokens = {u.prompt_tokens}")
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"{what}: usage does not add up: {u}")
    if max_tokens is not None:
        check(0 <= u.completion_tokens <= max_tokens, f"{what}: completion_tokens {u.completion_tokens} > max_tokens {max_tokens}")


def check_reason(reason, completion_tokens, max_tokens, what=""):
    check(reason in ("stop", "length"), f"{what}: finish_reason {reason!r}")
    if reason == "length":
        check(completion_tokens == max_tokens, f"{what}: finish_reason length after {completion_tokens} of {max_tokens} tokens")
    else:
        check(completion_tokens <= max_tokens, f"{what}: finish_reason stop after {completion_tokens} > {max_tokens} tokens")


# ---- the CLI ----


def cli(args, stdin=None, timeout=300):
    r = subprocess.run(
        [A.bin, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, XDG_RUNTIME_DIR="/tmp")
    )
    if r.returncode != 0:
        raise Fail(f"`tinfer {' '.join(args[:1])}` exited {r.returncode}: {r.stderr[-600:]}")
    return r.stdout


def cli_generate(prompt, n):
    """`tinfer generate`'s greedy text: stdout is the text and one final newline."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt + "\n")  # --file drops one final newline
    try:
        out = cli(["generate", "--model", A.model, "--device", A.device, "-c", str(A.ctx), "--file", f.name, "-n", str(n), "--temperature", "0"])
    finally:
        os.unlink(f.name)
    check(out.endswith("\n"), f"generate's stdout does not end in a newline: {out!r}")
    return out[:-1]


# ---- the checks ----

CHAT_Q = "Name three colours of the rainbow."
COMPLETION_P = "The capital of France is Paris. The capital of Germany is"


def t_models():
    global MODEL_ID
    ms = CLIENT.models.list()
    ids = [m.id for m in ms.data]
    check(len(ids) == 1, f"/v1/models lists {ids}")
    MODEL_ID = ids[0]
    status, _, body = http("GET", "/health")
    check(status == 200, f"/health {status} {body}")
    return f"model id {MODEL_ID!r}"


def t_chat():
    mt = 16
    r = chat(user(CHAT_Q), max_tokens=mt)
    check(r.object == "chat.completion" and r.id and len(r.choices) == 1, f"shape: {r}")
    c = r.choices[0]
    check(c.message.role == "assistant" and isinstance(c.message.content, str) and c.message.content, f"message: {c.message}")
    check_usage(r.usage, mt, "whole")
    check_reason(c.finish_reason, r.usage.completion_tokens, mt, "whole")
    texts, reasons, usage, chunks = collect_chat_stream(chat(user(CHAT_Q), stream=True, max_tokens=mt, stream_options={"include_usage": True}))
    check(texts.get(0) == c.message.content, f"streamed {texts.get(0)!r} != whole {c.message.content!r}")
    check(reasons.get(0) == c.finish_reason, f"streamed finish_reason {reasons.get(0)} != {c.finish_reason}")
    check(usage is not None, "stream_options.include_usage gave no usage chunk")
    check(counts(usage) == counts(r.usage), f"streamed usage {usage} != whole {r.usage}")
    # without include_usage: no usage chunk
    texts2, _, usage2, _ = collect_chat_stream(chat(user(CHAT_Q), stream=True, max_tokens=mt))
    check(usage2 is None, f"a usage chunk without include_usage: {usage2}")
    check(texts2.get(0) == c.message.content, f"second stream {texts2.get(0)!r} != {c.message.content!r}")
    return f"{r.usage.completion_tokens} tokens, {c.finish_reason}, {chunks} chunks: {c.message.content!r}"


def t_completions():
    mt = 16
    r = complete(COMPLETION_P, max_tokens=mt)
    check(r.object == "text_completion" and len(r.choices) == 1, f"shape: {r}")
    c = r.choices[0]
    check_usage(r.usage, mt, "whole")
    check_reason(c.finish_reason, r.usage.completion_tokens, mt, "whole")
    texts, reasons, usage, chunks = collect_completion_stream(complete(COMPLETION_P, stream=True, max_tokens=mt, stream_options={"include_usage": True}))
    check(texts.get(0) == c.text, f"streamed {texts.get(0)!r} != whole {c.text!r}")
    check(reasons.get(0) == c.finish_reason, f"streamed finish_reason {reasons.get(0)} != {c.finish_reason}")
    check(usage is not None and counts(usage) == counts(r.usage), f"streamed usage {usage} != whole {r.usage}")
    # the prompt as token ids gives the same
    status, _, tok = http("POST", "/tokenize", {"content": COMPLETION_P})
    check(status == 200, f"/tokenize {status} {tok}")
    check(len(tok["tokens"]) == r.usage.prompt_tokens, f"/tokenize gives {len(tok['tokens'])} tokens, usage.prompt_tokens {r.usage.prompt_tokens}")
    r2 = complete(tok["tokens"], max_tokens=mt)
    check(r2.choices[0].text == c.text, f"token-id prompt gives {r2.choices[0].text!r} != {c.text!r}")
    return f"{r.usage.completion_tokens} tokens, {c.finish_reason}, {chunks} chunks: {c.text!r}"


def t_finish_reason():
    r = complete(COMPLETION_P, max_tokens=3)
    check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3, f"max_tokens 3: {r.choices[0].finish_reason}, {r.usage}")
    r = chat(user("Answer with one word, yes or no: is the sky blue?"), max_tokens=32)
    reason, n = r.choices[0].finish_reason, r.usage.completion_tokens
    check_reason(reason, n, 32, "chat")
    if reason != "stop":
        note(f"the short-answer chat hit max_tokens ({r.choices[0].message.content!r}); an end token's 'stop' not seen")
    else:
        check(n < 32, f"stop after {n} tokens")
    return f"max_tokens 3 -> length; short answer -> {reason} after {n} tokens ({r.choices[0].message.content!r})"


def t_generate_cli():
    n = 24
    prompts = [COMPLETION_P, "def fibonacci(n):\n    "]
    out = []
    for p in prompts:
        r = complete(p, max_tokens=n)
        want = cli_generate(p, n)
        got = r.choices[0].text
        check(got == want, f"server {got!r} != `tinfer generate` {want!r} for prompt {p!r}")
        out.append(len(got))
    return f"{len(prompts)} prompts, {n} tokens: equal ({out} chars)"


def t_chat_cli():
    n = 24
    r = chat(user(CHAT_Q), max_tokens=n)
    out = cli(["chat", "--model", A.model, "--device", A.device, "-c", str(A.ctx), "--prompt", CHAT_Q, "-n", str(n), "--temperature", "0"])
    got = r.choices[0].message.content
    # chat's stdout: the reply and a final newline
    want = out[:-1] if out.endswith("\n") else out
    if got != want:
        if want.strip() == got.strip():
            note(f"equal but for surrounding whitespace: server {got!r}, chat {want!r}")
        else:
            raise Fail(f"server {got!r} != `tinfer chat` {want!r}")
    return f"equal: {got!r}"


def t_n_choices():
    kw = dict(n=3, temperature=1.0, seed=1234, max_tokens=12)
    r = complete("Once upon a time", **kw)
    check(len(r.choices) == 3 and sorted(c.index for c in r.choices) == [0, 1, 2], f"choices: {r.choices}")
    check(all(c.finish_reason in ("stop", "length") for c in r.choices), f"finish reasons: {[c.finish_reason for c in r.choices]}")
    check(r.usage.completion_tokens <= 36 and r.usage.completion_tokens >= 3, f"usage over 3 choices: {r.usage}")
    texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    r2 = complete("Once upon a time", **kw)
    texts2 = [c.text for c in sorted(r2.choices, key=lambda c: c.index)]
    check(texts == texts2, f"same seed, other texts: {texts} vs {texts2}")
    if len(set(texts)) < 2:
        note(f"the 3 sampled choices are all equal: {texts}")
    # streamed: the same 3 texts
    st, reasons, usage, _ = collect_completion_stream(complete("Once upon a time", stream=True, stream_options={"include_usage": True}, **kw))
    check([st.get(i) for i in range(3)] == texts, f"streamed n=3 {st} != {texts}")
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, f"streamed usage {usage} vs {r.usage}")
    rc = chat(user("Tell me a fun fact."), **kw)
    check(len(rc.choices) == 3, f"chat n=3 gave {len(rc.choices)} choices")
    return f"3 choices, reproducible with the seed, {len(set(texts))} distinct: {texts}"


def t_stop():
    mt = 32
    full = complete(COMPLETION_P, max_tokens=mt).choices[0].text
    # a stop string from inside the greedy text: a word after the first few characters
    words = [m for m in re.finditer(r"[A-Za-z]{3,}", full) if m.start() >= 3]
    if not words:
        raise Skip(f"no word to stop at in {full!r}")
    s = words[0].group(0)
    want = full[: full.find(s)]
    r = complete(COMPLETION_P, max_tokens=mt, stop=s)
    c = r.choices[0]
    check(c.text == want, f"stop={s!r}: {c.text!r}, want {want!r} (full {full!r})")
    check(c.finish_reason == "stop", f"stop={s!r}: finish_reason {c.finish_reason}")
    r = complete(COMPLETION_P, max_tokens=mt, stop=["@@never@@", s])
    check(r.choices[0].text == want and r.choices[0].finish_reason == "stop", f"stop list: {r.choices[0].text!r} {r.choices[0].finish_reason}")
    st, reasons, _, _ = collect_completion_stream(complete(COMPLETION_P, stream=True, max_tokens=mt, stop=[s]))
    check(st.get(0) == want and reasons.get(0) == "stop", f"streamed stop: {st.get(0)!r} {reasons.get(0)}")
    # chat
    cfull = chat(user(CHAT_Q), max_tokens=mt).choices[0].message.content
    cw = [m for m in re.finditer(r"[A-Za-z]{3,}", cfull) if m.start() >= 3]
    if cw:
        cs = cw[0].group(0)
        rc = chat(user(CHAT_Q), max_tokens=mt, stop=[cs])
        check(rc.choices[0].message.content == cfull[: cfull.find(cs)] and rc.choices[0].finish_reason == "stop", f"chat stop={cs!r}: {rc.choices[0].message.content!r} {rc.choices[0].finish_reason}")
        st, reasons, _, _ = collect_chat_stream(chat(user(CHAT_Q), stream=True, max_tokens=mt, stop=cs))
        check(st.get(0) == cfull[: cfull.find(cs)] and reasons.get(0) == "stop", f"streamed chat stop: {st.get(0)!r} {reasons.get(0)}")
    return f"stop={s!r} -> {want!r}, stop; list, stream and chat alike"


def t_chat_logprobs():
    mt = 8
    r = chat(user(CHAT_Q), max_tokens=mt, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    check(c.logprobs is not None and c.logprobs.content is not None, f"no logprobs.content: {c.logprobs}")
    content = c.logprobs.content
    check(len(content) == r.usage.completion_tokens, f"{len(content)} logprobs entries for {r.usage.completion_tokens} tokens")
    for i, e in enumerate(content):
        check(isinstance(e.token, str) and math.isfinite(e.logprob) and e.logprob <= 1e-6, f"entry {i}: {e}")
        check(e.bytes is None or (isinstance(e.bytes, list) and all(isinstance(b, int) and 0 <= b < 256 for b in e.bytes)), f"entry {i} bytes: {e.bytes}")
        check(len(e.top_logprobs) == 3, f"entry {i}: {len(e.top_logprobs)} top_logprobs")
        lps = [t.logprob for t in e.top_logprobs]
        check(lps == sorted(lps, reverse=True) and all(math.isfinite(x) and x <= 1e-6 for x in lps), f"entry {i}: top logprobs {lps}")
        # greedy: the chosen token is the most likely one
        check(e.top_logprobs[0].token == e.token and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-5, f"entry {i}: greedy token {e.token!r} {e.logprob} is not the top {e.top_logprobs[0]}")
        check(sum(math.exp(x) for x in lps) <= 1.0 + 1e-4, f"entry {i}: top-3 probabilities add to more than 1: {lps}")
    joined = "".join(e.token for e in content)
    if joined != c.message.content:
        note(f"the tokens joined {joined!r} != the content {c.message.content!r} (byte-level pieces?)")
    # bytes: OpenAI gives the token's UTF-8 bytes
    bad = [e for e in content if e.bytes is not None and bytes(e.bytes) != e.token.encode()]
    check(not bad, f"bytes are not the token's UTF-8: {bad[:2]}")
    # without logprobs: null
    r0 = chat(user(CHAT_Q), max_tokens=2)
    check(r0.choices[0].logprobs is None, f"logprobs without asking: {r0.choices[0].logprobs}")
    # streamed logprobs: refused (documented) or given
    try:
        st = list(chat(user(CHAT_Q), stream=True, max_tokens=4, logprobs=True, top_logprobs=2))
        have = [ch.logprobs for c in st for ch in c.choices if ch.logprobs]
        note(f"streamed chat logprobs accepted; {len(have)} chunks carry logprobs")
    except openai.BadRequestError as e:
        note(f"streamed logprobs refused (400): {e.body.get('message') if isinstance(e.body, dict) else e.body}")
    return f"{len(content)} tokens x top 3, greedy token = top 1, probabilities sane"


def t_completion_logprobs():
    mt = 8
    r = complete(COMPLETION_P, max_tokens=mt, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    check(lp is not None, "no logprobs")
    n = r.usage.completion_tokens
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n, f"lengths {len(lp.tokens)}, {len(lp.token_logprobs)}, {len(lp.top_logprobs)}, {len(lp.text_offset)} for {n} tokens")
    check("".join(lp.tokens) == c.text, f"tokens {lp.tokens} do not make the text {c.text!r}")
    for i in range(n):
        x, top = lp.token_logprobs[i], lp.top_logprobs[i]
        check(math.isfinite(x) and x <= 1e-6, f"token_logprobs[{i}] = {x}")
        check(isinstance(top, dict) and 1 <= len(top) <= 2, f"top_logprobs[{i}] = {top}")
        check(abs(max(top.values()) - x) < 1e-5 and lp.tokens[i] in top, f"greedy token {lp.tokens[i]!r} {x} is not the top of {top}")
        if len(top) < 2:
            note(f"top_logprobs[{i}] has {len(top)} entries: two tokens with the same text? {top}")
    offs = lp.text_offset
    check(all(offs[i + 1] - offs[i] == len(lp.tokens[i]) for i in range(n - 1)), f"text_offset {offs} vs tokens {lp.tokens}")
    note(f"text_offset starts at {offs[0]} (the prompt has {len(COMPLETION_P)} characters)")
    return f"{n} tokens, top 2 each, text_offset consistent"


def t_echo_score():
    text = "The quick brown fox jumps over the lazy dog. It was a sunny day."
    r = complete(text, max_tokens=0, echo=True, logprobs=1, temperature=0)
    c = r.choices[0]
    check(c.text == text, f"echo text {c.text!r} != prompt")
    check(r.usage.completion_tokens == 0, f"usage {r.usage}")
    lp = c.logprobs
    n = r.usage.prompt_tokens
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n, f"{len(lp.tokens)} entries for {n} prompt tokens")
    check(lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, f"first token's logprob {lp.token_logprobs[0]} / top {lp.top_logprobs[0]} (want None)")
    vals = lp.token_logprobs[1:]
    check(all(isinstance(x, float) and math.isfinite(x) and x <= 1e-6 for x in vals), f"prompt logprobs {vals}")
    for i in range(1, n):
        top = lp.top_logprobs[i]
        check(isinstance(top, dict) and len(top) == 1 and max(top.values()) >= lp.token_logprobs[i] - 1e-5, f"top_logprobs[{i}] {top} vs {lp.token_logprobs[i]}")
    check("".join(lp.tokens) == text, f"tokens {lp.tokens} do not make the prompt")
    check(lp.text_offset[0] == 0, f"text_offset {lp.text_offset}")
    total = sum(vals)
    # `tinfer logits --all` over the same ids: each position's log-softmax at the next token
    status, _, tok = http("POST", "/tokenize", {"content": text})
    ids = tok["tokens"]
    check(len(ids) == n, f"/tokenize {len(ids)} ids vs {n} prompt tokens")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "l.npy")
        cli(["logits", "--model", A.model, "--device", A.device, "-c", str(A.ctx), "--ids", ",".join(map(str, ids)), "--all", "--out", path])
        raw = open(path, "rb").read()
    hl = int.from_bytes(raw[8:10], "little")
    arr = array.array("f")
    arr.frombytes(raw[10 + hl :])
    vocab = len(arr) // n
    check(vocab * n == len(arr), f"logits file has {len(arr)} floats for {n} rows")
    ref = []
    for i in range(1, n):
        row = arr[(i - 1) * vocab : i * vocab]
        mx = max(row)
        lse = mx + math.log(math.fsum(math.exp(x - mx) for x in row))
        ref.append(row[ids[i]] - lse)
    worst = max(abs(a - b) for a, b in zip(vals, ref))
    check(abs(total - sum(ref)) < 1e-3 * max(1.0, abs(total)) and worst < 1e-3, f"sum {total:.5f} vs `tinfer logits` {sum(ref):.5f}, worst token {worst:.2e}")
    # lm-eval's shape: [[ids]] as the prompt
    status, _, body = http("POST", "/v1/completions", {"model": MODEL_ID, "prompt": [ids], "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0})
    check(status == 200, f"[[ids]] prompt: {status} {body}")
    s2 = sum(body["choices"][0]["logprobs"]["token_logprobs"][1:])
    check(abs(s2 - total) < 1e-4, f"[[ids]] sum {s2} vs {total}")
    return f"{n} prompt tokens, sum {total:.4f} = `tinfer logits` {sum(ref):.4f} (worst token {worst:.1e})"


TOPICS = [
    "the sea", "a robot", "coffee", "mountains", "a lost key", "winter", "a library", "trains",
    "the moon", "a garden", "music", "a storm", "bread", "a cat", "the desert", "a bridge",
]


def t_concurrent():
    mt = 16
    reqs = []
    for i, topic in enumerate(TOPICS):
        if i % 2 == 0:
            reqs.append(("chat", f"Write one sentence about {topic}."))
        else:
            reqs.append(("completion", f"Here is a short poem about {topic}:\n"))

    def alone(r):
        kind, p = r
        if kind == "chat":
            return chat(user(p), max_tokens=mt).choices[0].message.content
        return complete(p, max_tokens=mt).choices[0].text

    def streamed(r):
        kind, p = r
        t0 = time.time()
        if kind == "chat":
            texts, reasons, usage, _ = collect_chat_stream(chat(user(p), stream=True, max_tokens=mt, stream_options={"include_usage": True}))
        else:
            texts, reasons, usage, _ = collect_completion_stream(complete(p, stream=True, max_tokens=mt, stream_options={"include_usage": True}))
        check(usage is not None and reasons.get(0) in ("stop", "length"), f"{p!r}: usage {usage}, finish {reasons}")
        return texts.get(0, ""), time.time() - t0

    t0 = time.time()
    solo = [alone(r) for r in reqs]
    t_solo = time.time() - t0
    peak = [0]
    stop_poll = threading.Event()

    def poll():
        while not stop_poll.is_set():
            try:
                peak[0] = max(peak[0], metrics().get("tinfer_running_sequences", 0))
            except Exception:
                pass
            stop_poll.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.time()
    with cf.ThreadPoolExecutor(len(reqs)) as ex:
        futs = [ex.submit(streamed, r) for r in reqs]
        together = [f.result(timeout=TIMEOUT * 2) for f in futs]
    t_conc = time.time() - t0
    stop_poll.set()
    poller.join()
    diff = [(reqs[i][1], solo[i], together[i][0]) for i in range(len(reqs)) if solo[i] != together[i][0]]
    check(not diff, f"{len(diff)} of {len(reqs)} differ from the lone request; first: {diff[0] if diff else ''}")
    if peak[0] < 8:
        note(f"at most {peak[0]:.0f} sequences ran at once (of 16)")
    return f"16 streams equal to lone requests; 16 lone {t_solo:.1f}s, 16 together {t_conc:.1f}s, peak {peak[0]:.0f} running"


def t_disconnect():
    m0 = metrics()
    stream = complete("1, 2, 3, 4, 5, 6, 7, 8,", stream=True, max_tokens=2000, temperature=0)
    got = 0
    for c in stream:
        if c.choices and c.choices[0].text:
            got += 1
        if got >= 3:
            break
    stream.close()  # closes the connection mid-stream
    t0 = time.time()
    running = None
    while time.time() - t0 < 60:
        running = metrics().get("tinfer_running_sequences")
        if running == 0:
            break
        time.sleep(0.2)
    check(running == 0, f"tinfer_running_sequences still {running} 60 s after the client left")
    waited = time.time() - t0
    m1 = metrics()
    generated = m1.get("tinfer_completion_tokens_total", 0) - m0.get("tinfer_completion_tokens_total", 0)
    check(generated < 500, f"{generated:.0f} tokens generated for a client that left after 3 chunks")
    r = complete(COMPLETION_P, max_tokens=4)
    check(r.choices[0].text, "no answer after the disconnect")
    return f"running back to 0 in {waited:.1f}s; {generated:.0f} tokens generated in all; the server still answers"


def t_errors():
    details = []
    # a prompt past the context (-c): ~3000 tokens
    long_text = " ".join(f"word{i}" for i in range(1500))
    status, _, tok = http("POST", "/tokenize", {"content": long_text})
    check(status == 200 and len(tok["tokens"]) > A.ctx, f"the long text has {len(tok.get('tokens', []))} tokens, want > {A.ctx}")
    for kind in ("chat", "completion"):
        try:
            if kind == "chat":
                chat(user(long_text), max_tokens=4)
            else:
                complete(long_text, max_tokens=4)
            raise Fail(f"{kind}: a {len(tok['tokens'])}-token prompt was accepted with -c {A.ctx}")
        except openai.BadRequestError as e:
            check(e.status_code == 400, f"status {e.status_code}")
            problem = error_shape(e.response.json())
            check(problem is None, f"{kind}: {problem}")
    details.append(f"{len(tok['tokens'])}-token prompt: 400")
    # streamed too: a 400 before the stream starts
    try:
        list(complete(long_text, stream=True, max_tokens=4))
        raise Fail("a streamed over-long prompt was accepted")
    except openai.BadRequestError:
        pass
    # bad JSON
    for raw in (b"{not json", b'{"prompt": "a", "max_tokens": 2'):
        status, _, body = http("POST", "/v1/completions", raw=raw)
        check(status == 400, f"bad JSON {raw!r}: {status}")
        check(error_shape(body) is None, f"bad JSON: {error_shape(body)}")
    status, _, body = http("POST", "/v1/chat/completions", raw=b"[1, 2]")
    check(status == 400 and error_shape(body) is None, f"a JSON list: {status} {body}")
    details.append("bad JSON: 400")
    # field errors, through the client
    for what, fn in [
        ("temperature 5", lambda: complete("Hi", temperature=5)),
        ("max_tokens -1", lambda: complete("Hi", max_tokens=-1)),
        ("empty messages", lambda: CLIENT.chat.completions.create(model=MODEL_ID, messages=[])),
        ("bad role", lambda: CLIENT.chat.completions.create(model=MODEL_ID, messages=[{"role": "robot", "content": "x"}])),
        ("n too large", lambda: complete("Hi", n=1000)),
        ("top_logprobs 30", lambda: chat(user("Hi"), logprobs=True, top_logprobs=30)),
    ]:
        try:
            fn()
            raise Fail(f"{what} was accepted")
        except openai.BadRequestError as e:
            check(error_shape(e.response.json()) is None, f"{what}: {error_shape(e.response.json())}")
    details.append("field errors: 400")
    # unknown model: OpenAI answers 404 with code model_not_found
    try:
        CLIENT.completions.create(model="no-such-model", prompt="Hi", max_tokens=2)
        raise Fail("an unknown model was accepted")
    except openai.APIStatusError as e:
        body = e.response.json()
        check(e.status_code in (400, 404), f"unknown model: {e.status_code} {body}")
        check(error_shape(body) is None, f"unknown model: {error_shape(body)}")
        err = body["error"]
        if e.status_code != 404 or err.get("code") != "model_not_found":
            note(f"unknown model: {e.status_code} type={err.get('type')!r} code={err.get('code')!r} (OpenAI: 404, code 'model_not_found'): {err.get('message')}")
        details.append(f"unknown model: {e.status_code}")
    # no such route, wrong method
    status, _, body = http("GET", "/v1/nothing")
    check(status == 404 and error_shape(body) is None, f"unknown route: {status} {body}")
    status, _, body = http("GET", "/v1/completions")
    check(status == 405 and error_shape(body) is None, f"GET /v1/completions: {status} {body}")
    return "; ".join(details) + "; 404/405 routes"


def t_new_fields():
    """Fields OpenAI has that tinfer may not take yet: accepted and working, or refused with a 400
    naming them (SKIP); anything else fails."""
    base = complete("The list of fruits: apple, banana, apple, banana,", max_tokens=16)
    results, refused = [], []

    def attempt(name, fn, verify):
        try:
            r = fn()
        except openai.BadRequestError as e:
            msg = e.body.get("message") if isinstance(e.body, dict) else str(e.body)
            refused.append(f"{name}: 400 {msg}")
            return
        verify(r)
        results.append(name)

    # "off" values must be taken and change nothing
    r = complete("The list of fruits: apple, banana, apple, banana,", max_tokens=16, presence_penalty=0, frequency_penalty=0)
    check(r.choices[0].text == base.choices[0].text, "presence/frequency_penalty 0 changed the greedy text")

    def differs(r):
        check(r.choices[0].text != base.choices[0].text, f"the penalty left the greedy text as it was: {r.choices[0].text!r}")

    attempt("frequency_penalty 2", lambda: complete("The list of fruits: apple, banana, apple, banana,", max_tokens=16, frequency_penalty=2.0), differs)
    attempt("presence_penalty 2", lambda: complete("The list of fruits: apple, banana, apple, banana,", max_tokens=16, presence_penalty=2.0), differs)

    def json_ok(r):
        t = r.choices[0].message.content
        if r.choices[0].finish_reason == "stop":
            try:
                json.loads(t)
            except ValueError:
                raise Fail(f"response_format json_object gave non-JSON {t!r}")
        else:
            check(t.lstrip().startswith(("{", "[")), f"response_format json_object: {t!r} does not start a JSON value")

    attempt(
        "response_format json_object",
        lambda: chat([{"role": "system", "content": "Reply in JSON."}, *user("Give a person's name and age.")], max_tokens=32, response_format={"type": "json_object"}),
        json_ok,
    )
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}
    attempt(
        "response_format json_schema",
        lambda: chat(user("Give a person's name and age as JSON."), max_tokens=32, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}),
        json_ok,
    )
    for x in refused:
        note(f"refused: {x}")
    if not results:
        raise Skip(f"none taken yet ({len(refused)} refused with a 400 naming the field)")
    return f"taken: {', '.join(results)}; refused: {len(refused)}"


def t_queue_full():
    if not A.queue_url:
        raise Skip("no --queue-url server")
    n = 6

    def one(i):
        t0 = time.time()
        body = {"model": MODEL_ID, "prompt": f"Count slowly from {i}:", "max_tokens": 32, "temperature": 0}
        status, headers, resp = http("POST", "/v1/completions", body, url=A.queue_url)
        return status, headers, resp, time.time() - t0

    t0 = time.time()
    with cf.ThreadPoolExecutor(n) as ex:
        outs = list(ex.map(one, range(n)))
    took = time.time() - t0
    codes = [o[0] for o in outs]
    busy = [o for o in outs if o[0] in (429, 503)]
    ok = [o for o in outs if o[0] == 200]
    check(len(busy) + len(ok) == n, f"statuses {codes}: {[o[2] for o in outs if o[0] not in (200, 429, 503)]}")
    check(busy, f"no 429/503 among {n} concurrent requests to --parallel 1 --queue 1: {codes}")
    check(len(ok) >= 2, f"only {len(ok)} completed: {codes}")
    for o in busy:
        check(error_shape(o[2]) is None, f"{o[0]}: {error_shape(o[2])}")
    for o in ok:
        check(o[2]["choices"][0]["text"] and o[2]["usage"]["completion_tokens"] > 0, f"a completed request: {o[2]}")
    if not any("Retry-After" in o[1] or "retry-after" in o[1] for o in busy):
        note("the busy answers carry no Retry-After header")
    # the busy server still works afterwards, and the openai client sees 503 as an APIStatusError
    status, _, body = http("POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2}, url=A.queue_url)
    check(status == 200, f"after the burst: {status} {body}")
    m = metrics(A.queue_url)
    return f"statuses {sorted(codes)} in {took:.1f}s ({busy[0][2]['error']['message']!r}); waiting gauge now {m.get('tinfer_waiting_requests')}"


def filler(tokens):
    """A system prompt of about `tokens` tokens (measured with /tokenize)."""
    sentences = [
        "You are a careful assistant for a small bakery that sells bread, cakes and pastries.",
        "Answer briefly and politely, and never invent prices that are not listed here.",
        "The bakery opens at seven in the morning and closes at six in the evening.",
        "Sourdough loaves cost four euros, baguettes two euros, and croissants one euro fifty.",
        "On Sundays the bakery closes at noon, and on Mondays it is closed all day.",
        "Custom cakes must be ordered three days ahead and can be collected after ten.",
    ]
    text, i = "", 0
    while True:
        text += f"Rule {i + 1}. " + sentences[i % len(sentences)] + " "
        i += 1
        if i % 6 == 0:
            status, _, tok = http("POST", "/tokenize", {"content": text})
            if len(tok["tokens"]) >= tokens:
                return text.strip(), len(tok["tokens"])


def t_prefix_cache():
    system, ntok = filler(600)
    mt = 16
    qa = "When does the bakery open on Sundays?"
    qb = "How much is a baguette?"

    def ask(q):
        r = chat([{"role": "system", "content": system}, *user(q)], max_tokens=mt)
        return r.choices[0].message.content, r.usage.prompt_tokens

    name = prefix_metric(metrics())
    val = lambda: metrics().get(name, 0.0) if name else None
    m0 = val()
    t0 = time.time()
    b_cold, pb = ask(qb)  # nothing cached yet: B alone
    t_cold = time.time() - t0
    m1 = val()
    t0 = time.time()
    a, pa = ask(qa)  # shares the system prompt with B
    t_a = time.time() - t0
    m2 = val()
    t0 = time.time()
    b_warm, _ = ask(qb)  # all of B's prompt seen before
    t_warm = time.time() - t0
    m3 = val()
    check(b_warm == b_cold, f"the second B {b_warm!r} != the first {b_cold!r}")
    # at once: A and B together, each equal to its lone answer
    with cf.ThreadPoolExecutor(2) as ex:
        fa, fb = ex.submit(ask, qa), ex.submit(ask, qb)
        a2, b2 = fa.result(timeout=TIMEOUT), fb.result(timeout=TIMEOUT)
    check(a2[0] == a and b2[0] == b_cold, f"together: A {a2[0]!r} vs {a!r}, B {b2[0]!r} vs {b_cold!r}")
    times = f"B cold {t_cold:.2f}s, A {t_a:.2f}s, B again {t_warm:.2f}s (prompts {pb}/{pa} tokens, system ~{ntok})"
    if name is None:
        print(f"SKIP prefix-cache metric: no /metrics name contains 'prefix' ({times})", flush=True)
        RESULTS.append(("SKIP", "prefix-cache metric"))
        return f"outputs equal with a shared {ntok}-token system prompt; {times}"
    ha, hb = m2 - m1, m3 - m2
    check(ha >= 0.5 * ntok, f"{name} rose by {ha:.0f} for A (shares ~{ntok} tokens with B before it); {times}")
    check(hb >= 0.5 * ntok, f"{name} rose by {hb:.0f} for B asked again; {times}")
    return f"{name}: B cold +{m1 - m0:.0f}, A +{ha:.0f}, B again +{hb:.0f}; outputs equal; {times}"


CHECKS = [
    ("models", t_models),
    ("chat", t_chat),
    ("completions", t_completions),
    ("finish_reason", t_finish_reason),
    ("generate-cli", t_generate_cli),
    ("chat-cli", t_chat_cli),
    ("n", t_n_choices),
    ("stop", t_stop),
    ("chat-logprobs", t_chat_logprobs),
    ("completion-logprobs", t_completion_logprobs),
    ("echo-score", t_echo_score),
    ("concurrent", t_concurrent),
    ("disconnect", t_disconnect),
    ("errors", t_errors),
    ("new-fields", t_new_fields),
    ("queue-full", t_queue_full),
    ("prefix-cache", t_prefix_cache),
]


def main():
    global A, CLIENT
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--queue-url", help="a server started with --parallel 1 --queue 1 (the queue check)")
    p.add_argument("--bin", default="target/release/tinfer")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ctx", type=int, default=2048, help="the servers' -c")
    p.add_argument("--only", help="comma-separated check names (models always runs)")
    p.add_argument("--list", action="store_true")
    A = p.parse_args()
    if A.list:
        print("\n".join(n for n, _ in CHECKS))
        return 0
    A.url, A.queue_url = A.url.rstrip("/"), (A.queue_url or "").rstrip("/") or None
    CLIENT = openai.OpenAI(base_url=A.url + "/v1", api_key="anything", timeout=TIMEOUT, max_retries=0)
    only = set(A.only.split(",")) if A.only else None
    if only and only - {n for n, _ in CHECKS}:
        print(f"unknown checks: {only - {n for n, _ in CHECKS}}", file=sys.stderr)
        return 2
    print(f"openai {openai.__version__}, server {A.url}, model {A.model} on {A.device}", flush=True)
    t_all = time.time()
    for name, fn in CHECKS:
        if only and name not in only and name != "models":
            continue
        t0 = time.time()
        try:
            detail = fn()
            status = "PASS"
        except Skip as e:
            status, detail = "SKIP", str(e)
        except Fail as e:
            status, detail = "FAIL", str(e)
        except Exception as e:  # an unexpected exception is a failure with its story
            status = "FAIL"
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == __file__), "")
            body = getattr(e, "body", None)
            detail = f"{type(e).__name__} {where}: {e}" + (f" body={body}" if body and str(body) not in str(e) else "")
        RESULTS.append((status, name))
        print(f"{status} {name} ({time.time() - t0:.1f}s): {detail}", flush=True)
        if name == "models" and status != "PASS":
            break
    counts = {s: sum(1 for r in RESULTS if r[0] == s) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {time.time() - t_all:.0f}s", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
