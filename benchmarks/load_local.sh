#!/usr/bin/env bash
# The committed local-cpu load results (issue #7), made by this script from the repository root:
#
#   bash benchmarks/load_local.sh            # ~15 min on 2 cores; needs the venv (bash deploy/setup.sh test)
#
# It ingests the demo sample (deploy/sample) and the test PDF into a fresh store, serves the local-cpu app
# (retriever, reranker, vLLM generator on CPU, gateway), and runs `mmrag bench load` on search (closed and open
# loop), answer and chat, the guidellm cross-check, then restarts the app with 2 retriever replicas for the
# scaling run and compares. Results go to benchmarks/results/load/local-cpu-*.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || source .venv/bin/activate

OUT=benchmarks/results/load
WORK=$(mktemp -d /tmp/mmrag-load-XXXXXX)
DB=$WORK/db
PORT=${PORT:-8011}
URL=http://127.0.0.1:$PORT
export MMRAG_STORE__URI=$DB MMRAG_SERVER__PORT=$PORT

serve_pid=
stop_server() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid" && wait "$serve_pid" || true
  fi
  serve_pid=
}
trap 'stop_server; rm -rf "$WORK"' EXIT

start_server() {  # env overrides for the app are passed as arguments: NAME=VALUE ...
  env "$@" mmrag serve >"$WORK/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 300); do
    if curl -sf "$URL/healthz" >/dev/null; then return 0; fi
    kill -0 "$serve_pid" 2>/dev/null || { tail -50 "$WORK/serve.log"; return 1; }
    sleep 1
  done
  echo "server did not come up" >&2
  return 1
}

mmrag ingest deploy/sample tests/data/coin.pdf --json
start_server

COMMON=(--url "$URL" --warmup 5)
mmrag bench load "${COMMON[@]}" --endpoint search --concurrency 1,2,4,8,16 --duration 20 \
  --slo latency_ms=500 --name local-cpu-search-r1
mmrag bench load "${COMMON[@]}" --endpoint search --rate 2,5,10,20 --duration 20 \
  --slo latency_ms=500 --name local-cpu-search-open
mmrag bench load "${COMMON[@]}" --endpoint answer --concurrency 1,2,4 --requests 40 --max-tokens 32 \
  --slo ttft_ms=1000,latency_ms=3000 --name local-cpu-answer
mmrag bench load "${COMMON[@]}" --endpoint chat --concurrency 1,2,4 --requests 40 --max-tokens 32 \
  --slo ttft_ms=1000,latency_ms=3000 --name local-cpu-chat
python -m benchmarks.crosscheck --url "$URL" --concurrency 1,2,4 --requests 40 --warmup 5 --max-tokens 32 \
  --install --out "$OUT/local-cpu-crosscheck"
stop_server

start_server MMRAG_RETRIEVER__NUM_REPLICAS=2
mmrag bench load "${COMMON[@]}" --endpoint search --concurrency 1,2,4,8,16 --duration 20 \
  --slo latency_ms=500 --name local-cpu-search-r2
stop_server
mmrag bench compare "$OUT/local-cpu-search-r1" "$OUT/local-cpu-search-r2" \
  --label "1 retriever" --label "2 retrievers" --out "$OUT/local-cpu-search-scaling"
