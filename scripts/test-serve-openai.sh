#!/usr/bin/env bash
# `tinfer serve` against the real `openai` Python client and plain HTTP: chat and completions
# (whole and streamed), greedy text equal to `tinfer generate`, n, stop strings, logprobs, echo
# scoring against `tinfer logits`, 16 concurrent streams, a client that disconnects, errors in
# OpenAI's shape, a full queue, the prefix cache. One PASS/FAIL/SKIP line per check; exit 1 on
# any FAIL. Builds nothing: run `cargo build --release` first.
#
#   scripts/test-serve-openai.sh [extra args for serve_openai_check.py, e.g. --only chat,stop]
#
# Environment:
#   MODEL        the model (default smollm2-135m-instruct)
#   DEVICE       cpu or gpu (default cpu)
#   TINFER_BIN   the binary (default target/release/tinfer)
#   TINFER_VENV  the virtual environment with the openai client (default target/openai-venv;
#                made and filled from PyPI when missing)
#   OPENAI_VERSION  the pinned client version (default 2.54.0)
#   SERVE_ARGS   extra `tinfer serve` arguments for both servers (e.g. "-t 2")
#   LOAD_TIMEOUT seconds to wait for /health (default 300)
#   KEEP_LOGS    1: keep the servers' logs (their folder is printed)
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

BIN=${TINFER_BIN:-target/release/tinfer}
MODEL=${MODEL:-smollm2-135m-instruct}
DEVICE=${DEVICE:-cpu}
VENV=${TINFER_VENV:-target/openai-venv}
OPENAI_VERSION=${OPENAI_VERSION:-2.54.0}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
read -ra EXTRA <<<"${SERVE_ARGS:-}"

[ -x "$BIN" ] || { echo "no $BIN: build it first (cargo build --release)" >&2; exit 2; }

# the client, pinned
if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    echo "setting up $VENV with openai==$OPENAI_VERSION" >&2
    python3 -m venv "$VENV" || exit 2
    "$VENV/bin/pip" install -q "openai==$OPENAI_VERSION" || exit 2
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/tinfer-openai.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        # SIGTERM lets running requests finish; do not wait for ever
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "server logs in $LOGS" >&2; else rm -rf "$LOGS"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME ARGS...: start `tinfer serve` on a free port; sets URL (empty on failure)
start_server() {
    local name=$1
    shift
    local log="$LOGS/$name.log"
    "$BIN" serve --model "$MODEL" --device "$DEVICE" --port 0 "$@" "${EXTRA[@]}" >"$LOGS/$name.out" 2>"$log" &
    PIDS+=($!)
    local pid=$! port=""
    for _ in $(seq 100); do
        port=$(sed -n '1s/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$log" 2>/dev/null)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "server $name did not start:" >&2
        cat "$log" >&2
        URL=""
        return 1
    fi
    URL="http://127.0.0.1:$port"
}

# wait_ready URL NAME: poll /health until 200
wait_ready() {
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$LOAD_TIMEOUT" ]; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1/health")" = 200 ] && return 0
        local pid
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "a server exited while loading:" >&2; cat "$LOGS"/*.log >&2; return 1; }
        done
        sleep 0.5
    done
    echo "server $2 not ready after ${LOAD_TIMEOUT}s:" >&2
    cat "$LOGS/$2.log" >&2
    return 1
}

t0=$SECONDS
start_server main --parallel 16 -c 2048 || exit 1
MAIN=$URL
# the queue check's server: one sequence at a time, one waiting
start_server small --parallel 1 --queue 1 -c 2048 || exit 1
SMALL=$URL
wait_ready "$MAIN" main || exit 1
wait_ready "$SMALL" small || exit 1
echo "servers ready in $((SECONDS - t0))s: $MAIN (--parallel 16), $SMALL (--parallel 1 --queue 1); model $MODEL on $DEVICE" >&2

"$VENV/bin/python" scripts/serve_openai_check.py --url "$MAIN" --queue-url "$SMALL" \
    --bin "$BIN" --model "$MODEL" --device "$DEVICE" --ctx 2048 "$@"
rc=$?
# a server that died during the checks is a failure whatever the checks said
for p in "${PIDS[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
        echo "FAIL a server (pid $p) exited during the checks; its log:" >&2
        cat "$LOGS"/*.log >&2
        rc=1
    fi
done
echo "total $((SECONDS - t0))s" >&2
exit $rc
