#!/usr/bin/env python3
"""Load benchmark for `tinfer serve` (or any OpenAI-compatible server), standard library only.

For each concurrency N (--clients "1 4 16 64"), N client threads each send R streaming requests
(--requests; default 2 per client up to 16 clients, 1 above) one after another, greedy, with
`max_tokens` (--max-tokens) and distinct prompts, and time each request's first content chunk
(TTFT) and the gaps between content chunks (ITL; a chunk may carry several tokens, so TPOT,
(last - first chunk) / (tokens - 1), is given too). Output tokens come from the usage chunk
(stream_options.include_usage), else from the chunk count. /metrics is sampled during each run
(peak running sequences, peak KV pages used / total, prefix-cache counter's rise when present).

--shared-prefix TOKENS: every request starts with one common system prompt of about TOKENS
tokens (a fresh one per N); the first request runs alone (it fills the cache), then a second
alone, then the rest at concurrency N; the first's TTFT is reported against the later ones'.

Prints a Markdown table (and writes everything to --json FILE). A failed or timed-out request
counts as an error; nothing waits longer than --timeout.

    bench_serve.py --url http://127.0.0.1:8080 [--clients "1 4 16"] [--max-tokens 64] [--json out.json]
"""

import argparse
import http.client
import json
import math
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

TOPICS = [
    "the sea", "a robot", "coffee", "mountains", "a lost key", "winter", "a library", "trains",
    "the moon", "a garden", "music", "a storm", "bread", "a cat", "the desert", "a bridge",
    "a lighthouse", "rain", "a market", "an old clock", "a river", "snow", "a violin", "a forest",
]
STYLES = ["a short story", "a poem", "a product description", "a news report", "a letter", "a dialogue"]


def prompt_for(i, chat):
    """A distinct prompt per request number; a completion's ends mid-sentence so that the model
    goes on (a finished sentence often gets an end token at once)."""
    style, topic = STYLES[i % len(STYLES)], TOPICS[(i // len(STYLES)) % len(TOPICS)]
    if chat:
        return f"Request {i}: write {style} about {topic}."
    return f"Request {i}. Here is {style} about {topic}.\n\nThe"


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Server:
    def __init__(self, url, api_key, timeout):
        u = urllib.parse.urlparse(url)
        self.url, self.host, self.port = url.rstrip("/"), u.hostname, u.port or 80
        self.api_key, self.timeout = api_key, timeout

    def get(self, path, timeout=10):
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def post_json(self, path, body, timeout=30):
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def metrics(self):
        """{name: value} of unlabelled samples, or {} when /metrics is missing."""
        try:
            text = self.get("/metrics", timeout=5)
        except Exception:
            return {}
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\S+)", line)
            if m and not line.startswith("#"):
                try:
                    out[m.group(1)] = float(m.group(2))
                except ValueError:
                    pass
        return out

    def stream(self, path, body):
        """One streaming request: a dict of times and counts, or one with "error"."""
        t0 = time.perf_counter()
        r = {"start": t0, "ttft": None, "gaps": [], "chunks": 0, "tokens": None, "error": None, "text": ""}
        deadline = t0 + self.timeout
        conn = http.client.HTTPConnection(self.host, self.port, timeout=min(self.timeout, 60))
        try:
            conn.request("POST", path, body=json.dumps(body), headers={
                "Content-Type": "application/json", "Accept": "text/event-stream",
                "Authorization": f"Bearer {self.api_key}",
            })
            resp = conn.getresponse()
            if resp.status != 200:
                r["error"] = f"HTTP {resp.status}: {resp.read(500).decode(errors='replace')}"
                return r
            last, done = None, False
            while True:
                if time.perf_counter() > deadline:
                    r["error"] = f"timed out after {self.timeout}s"
                    return r
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                c = json.loads(data)
                if "error" in c:
                    r["error"] = f"stream error: {c['error']}"
                    return r
                if c.get("usage"):
                    r["tokens"] = c["usage"].get("completion_tokens")
                    r["prompt_tokens"] = c["usage"].get("prompt_tokens")
                for ch in c.get("choices") or []:
                    text = ch.get("text")
                    if text is None:
                        text = (ch.get("delta") or {}).get("content")
                    if ch.get("finish_reason"):
                        r["finish"] = ch["finish_reason"]
                    if text:
                        now = time.perf_counter()
                        r["chunks"] += 1
                        r["text"] += text
                        if last is None:
                            r["ttft"] = now - t0
                        else:
                            r["gaps"].append(now - last)
                        last = now
            if not done:
                r["error"] = "the stream ended without [DONE]"
            r["end"] = time.perf_counter()
            if r["tokens"] is None:
                r["tokens"] = r["chunks"]
            if r["ttft"] is None and not r["error"]:
                r["empty"] = True  # an end token first: a reply without text, not an error
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        return r


def make_body(args, model, i, system):
    if args.endpoint == "chat":
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt_for(i, True)}]
        body = {"messages": msgs}
        path = "/v1/chat/completions"
    else:
        body = {"prompt": (system + "\n\n" if system else "") + prompt_for(i, False)}
        path = "/v1/completions"
    body.update({
        "model": model, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    })
    if args.ignore_eos:
        body["ignore_eos"] = True  # vLLM's and llama.cpp's extension; a server may ignore it
    return path, body


class Sampler(threading.Thread):
    """Samples /metrics during a run: peaks and the prefix counter."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv, self.stop_ev, self.peak = srv, threading.Event(), {}

    def run(self):
        while not self.stop_ev.is_set():
            m = self.srv.metrics()
            for k in ("tinfer_running_sequences", "tinfer_waiting_requests", "tinfer_kv_pages_used", "tinfer_kv_pages"):
                if k in m:
                    self.peak[k] = max(self.peak.get(k, 0), m[k])
            self.stop_ev.wait(0.25)

    def finish(self):
        self.stop_ev.set()
        self.join(10)
        return self.peak


def prefix_name(m):
    names = sorted((k for k in m if "prefix" in k), key=lambda k: (not ("hit" in k and "token" in k), not k.endswith("_total"), k))
    return names[0] if names else None


def shared_system(srv, tokens, tag):
    """A system prompt of about `tokens` tokens (sized with /tokenize when the server has it)."""
    base = (
        "You are a helpful writing assistant for a travel magazine. Keep answers vivid but short, "
        "prefer concrete details over general praise, avoid clichés, and write in plain English. "
    )
    text = f"Session {tag}. "
    while True:
        text += base
        try:
            n = len(srv.post_json("/tokenize", {"content": text})["tokens"])
        except Exception:
            n = len(text) // 4  # no /tokenize: about 4 characters a token
        if n >= tokens:
            return text, n


def run_level(srv, args, model, n, reqs, counter, system=None):
    """N clients, `reqs` requests each; returns the results (and the shared-prefix extras)."""
    results, lock = [], threading.Lock()
    extra = {}
    m0 = srv.metrics()
    sampler = Sampler(srv)
    sampler.start()
    total = n * reqs
    ids = list(range(counter, counter + total + (2 if system else 0)))
    t_start = time.perf_counter()
    if system:
        # the first request alone fills the cache; a second alone reads it; then the rest
        for label in ("first", "second"):
            path, body = make_body(args, model, ids.pop(0), system)
            r = srv.stream(path, body)
            results.append(r)
            extra[f"{label}_ttft"] = r["ttft"]
            extra[f"{label}_error"] = r["error"]
    queue = list(ids)

    def client():
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            path, body = make_body(args, model, i, system)
            r = srv.stream(path, body)
            with lock:
                results.append(r)

    t_conc = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.time() + args.timeout * (reqs + 2)
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    hung = sum(t.is_alive() for t in threads)
    t_end = time.perf_counter()
    peak = sampler.finish()
    m1 = srv.metrics()
    later = [r["ttft"] for r in results[2:] if r["ttft"] is not None and not r["error"]] if system else []
    if system:
        extra["later_ttft_mean"] = sum(later) / len(later) if later else None
    if system:
        # throughput over the concurrent part only (the two lone requests are not load)
        results, t_start = results[2:], t_conc
        extra["lone_errors"] = [e for e in (extra["first_error"], extra["second_error"]) if e]
    return dict(results=results, t_start=t_start, t_end=t_end, hung=hung, peak=peak, m0=m0, m1=m1, extra=extra)


def summarize(n, results, t_start, t_end, hung, peak, m0, m1, extra):
    done = [r for r in results if not r["error"]]
    ok = [r for r in done if not r.get("empty")]
    errors = [r["error"] for r in results if r["error"]] + ["a client thread hung"] * hung + extra.get("lone_errors", [])
    dur = t_end - t_start
    ttft = [r["ttft"] for r in ok]
    gaps = [g for r in ok for g in r["gaps"]]
    tpot = [(r["end"] - r["start"] - r["ttft"]) / (r["tokens"] - 1) for r in ok if r["tokens"] and r["tokens"] > 1]
    out_tokens = sum(r["tokens"] or 0 for r in ok)
    pname = prefix_name(m1)
    row = {
        "clients": n,
        "requests": len(results),
        "errors": len(errors),
        "empty_replies": len(done) - len(ok),
        "error_samples": sorted(set(errors))[:5],
        "seconds": dur,
        "req_per_s": len(done) / dur if dur > 0 else None,
        "out_tok_per_s": out_tokens / dur if dur > 0 else None,
        "out_tokens": out_tokens,
        "mean_out_tokens": out_tokens / len(ok) if ok else None,
        "ttft_ms": {p: (pct(ttft, p) or 0) * 1000 for p in (50, 90, 99)} if ttft else None,
        "itl_ms": {p: (pct(gaps, p) or 0) * 1000 for p in (50, 90, 99)} if gaps else None,
        "tpot_ms_p50": pct(tpot, 50) * 1000 if tpot else None,
        "peak_running": peak.get("tinfer_running_sequences"),
        "peak_waiting": peak.get("tinfer_waiting_requests"),
        "kv_pages_used_peak": peak.get("tinfer_kv_pages_used"),
        "kv_pages": peak.get("tinfer_kv_pages") or m1.get("tinfer_kv_pages"),
        "kv_pages_used_after": m1.get("tinfer_kv_pages_used"),
        "prefix_metric": pname,
        "prefix_delta": (m1.get(pname, 0) - m0.get(pname, 0)) if pname else None,
        "finish_reasons": {str(k): sum(1 for r in done if r.get("finish") == k) for k in {r.get("finish") for r in done}},
    }
    row.update(extra)
    return row


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def table(rows, shared):
    head = ["N", "reqs", "err", "s", "req/s", "out tok/s", "tok/req", "TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms", "TPOT p50 ms", "peak run", "KV pages peak/total", "prefix hits"]
    if shared:
        head += ["TTFT first ms", "TTFT 2nd ms", "TTFT later mean ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t = r["ttft_ms"]
        i = r["itl_ms"]
        kv = "-" if not r["kv_pages"] else f"{fmt(r['kv_pages_used_peak'], '.0f')}/{fmt(r['kv_pages'], '.0f')}"
        cells = [
            str(r["clients"]), str(r["requests"]), str(r["errors"]) + (f" ({r['empty_replies']} empty)" if r["empty_replies"] else ""), fmt(r["seconds"]), fmt(r["req_per_s"], ".2f"),
            fmt(r["out_tok_per_s"]), fmt(r["mean_out_tokens"]),
            "-" if not t else f"{t[50]:.0f} / {t[90]:.0f} / {t[99]:.0f}",
            "-" if not i else f"{i[50]:.1f} / {i[90]:.1f} / {i[99]:.1f}",
            fmt(r["tpot_ms_p50"]), fmt(r["peak_running"], ".0f"), kv,
            "-" if r["prefix_metric"] is None else f"{r['prefix_delta']:.0f}",
        ]
        if shared:
            ms = lambda x: "-" if x is None else f"{x * 1000:.0f}"
            cells += [ms(r.get("first_ttft")), ms(r.get("second_ttft")), ms(r.get("later_ttft_mean"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    p.add_argument("--clients", default="1 4 16 64", help='concurrency levels, e.g. "1 4 16 64"')
    p.add_argument("--requests", type=int, help="requests per client (default 2 up to 16 clients, 1 above)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    p.add_argument("--shared-prefix", type=int, metavar="TOKENS", help="a common system prompt of about TOKENS tokens")
    p.add_argument("--ignore-eos", action="store_true", help="also send ignore_eos: true (a vLLM/llama.cpp extension)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per request at most")
    p.add_argument("--api-key", default="bench")
    p.add_argument("--model", help="the model name to send (default: the first of /v1/models)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--warmup", type=int, default=1, help="lone requests before measuring (default 1)")
    args = p.parse_args()
    levels = [int(x) for x in args.clients.replace(",", " ").split()]
    srv = Server(args.url, args.api_key, args.timeout)
    model = args.model
    if not model:
        try:
            model = json.loads(srv.get("/v1/models"))["data"][0]["id"]
        except Exception as e:
            print(f"cannot read {args.url}/v1/models: {e}", file=sys.stderr)
            return 2
    print(f"# bench-serve: {args.url}, model {model}, {args.endpoint}, max_tokens {args.max_tokens}, greedy"
          + (f", shared prefix ~{args.shared_prefix} tokens" if args.shared_prefix else ""), file=sys.stderr)
    counter = 100000  # request numbers (prompts) never repeat across levels
    for _ in range(args.warmup):
        path, body = make_body(args, model, counter, None)
        counter += 1
        w = srv.stream(path, body)
        if w["error"]:
            print(f"warm-up request failed: {w['error']}", file=sys.stderr)
    rows = []
    for n in levels:
        reqs = args.requests or (2 if n <= 16 else 1)
        system = None
        if args.shared_prefix:
            system, ntok = shared_system(srv, args.shared_prefix, f"{n}-{time.time_ns() % 10**9}")
            print(f"# N={n}: shared system prompt of {ntok} tokens", file=sys.stderr)
        total = n * reqs + (2 if system else 0)
        print(f"# N={n}: {total} requests ...", file=sys.stderr, flush=True)
        res = run_level(srv, args, model, n, reqs, counter, system)
        counter += total
        row = summarize(n, **res)
        row["shared_prefix_tokens"] = args.shared_prefix
        rows.append(row)
        print(f"#   {row['errors']} errors, {row['seconds']:.1f}s, {fmt(row['out_tok_per_s'])} tok/s"
              + (f"; e.g. {row['error_samples'][0]}" if row["error_samples"] else ""), file=sys.stderr, flush=True)
    print(table(rows, bool(args.shared_prefix)))
    notes = []
    if rows and rows[-1]["prefix_metric"] is None:
        notes.append("no prefix-cache metric in /metrics")
    short = [r for r in rows if r["mean_out_tokens"] and r["mean_out_tokens"] < 0.9 * args.max_tokens]
    if short:
        notes.append(f"some replies ended before max_tokens (end tokens; mean {short[0]['mean_out_tokens']:.1f} of {args.max_tokens} at N={short[0]['clients']})")
    for n_ in notes:
        print(f"\nNote: {n_}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"url": args.url, "model": model, "endpoint": args.endpoint, "max_tokens": args.max_tokens,
                       "shared_prefix": args.shared_prefix, "levels": rows}, f, indent=1)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
