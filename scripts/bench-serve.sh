#!/usr/bin/env bash
# Load benchmark of `tinfer serve`: concurrent streaming clients, TTFT / inter-token latency
# percentiles, requests/s and output tokens/s per concurrency, KV pages and prefix-cache hits
# from /metrics; a Markdown table on stdout. Builds nothing: run `cargo build --release` first.
#
#   scripts/bench-serve.sh [--clients "1 4 16 64"] [--requests R] [--max-tokens 64]
#                          [--endpoint completions|chat] [--shared-prefix TOKENS] [--json FILE]
#   scripts/bench-serve.sh --url http://HOST:PORT ...   (a server already running: none started)
#
# Environment (when it starts the server):
#   MODEL (default smollm2-135m-instruct), DEVICE (cpu or gpu; default cpu), PARALLEL (default 64),
#   CTX (-c, default 4096), TINFER_BIN (default target/release/tinfer), SERVE_ARGS (extra serve
#   arguments), LOAD_TIMEOUT (seconds for /health, default 300), KEEP_LOGS=1 (keep the log).
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

for a in "$@"; do
    case $a in --url | --url=*) exec python3 scripts/bench_serve.py "$@" ;; esac
done

BIN=${TINFER_BIN:-target/release/tinfer}
MODEL=${MODEL:-smollm2-135m-instruct}
DEVICE=${DEVICE:-cpu}
PARALLEL=${PARALLEL:-64}
CTX=${CTX:-4096}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
read -ra EXTRA <<<"${SERVE_ARGS:-}"
[ -x "$BIN" ] || { echo "no $BIN: build it first (cargo build --release)" >&2; exit 2; }

LOG=$(mktemp "${TMPDIR:-/tmp}/tinfer-bench.XXXXXX")
"$BIN" serve --model "$MODEL" --device "$DEVICE" --port 0 --parallel "$PARALLEL" -c "$CTX" "${EXTRA[@]}" 2>"$LOG" >/dev/null &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "server log: $LOG" >&2; else rm -f "$LOG"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=""
for _ in $(seq 100); do
    port=$(sed -n '1s/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$LOG")
    [ -n "$port" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start:" >&2; cat "$LOG" >&2; exit 1; }
URL="http://127.0.0.1:$port"
t0=$SECONDS
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/health")" = 200 ]; do
    kill -0 "$PID" 2>/dev/null || { echo "the server exited while loading:" >&2; cat "$LOG" >&2; exit 1; }
    [ $((SECONDS - t0)) -lt "$LOAD_TIMEOUT" ] || { echo "not ready after ${LOAD_TIMEOUT}s:" >&2; cat "$LOG" >&2; exit 1; }
    sleep 0.5
done
echo "# server: $MODEL on $DEVICE, --parallel $PARALLEL -c $CTX ${SERVE_ARGS:-} (ready in $((SECONDS - t0))s)" >&2
python3 scripts/bench_serve.py --url "$URL" "$@"
rc=$?
kill -0 "$PID" 2>/dev/null || { echo "the server exited during the benchmark:" >&2; tail -20 "$LOG" >&2; rc=1; }
exit $rc
