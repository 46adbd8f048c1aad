#!/usr/bin/env bash
# Run every squall benchmark in turn; each prints its table and the ratios measured in the
# same run, and writes its figures to bench/out/NAME.json. Loopback traffic only.
#
#   bench/run_all.sh            # pool, overhead, crash, batchapi, embeddings, memory (100k, 1M rows),
#                               # then ray (only when squall[ray] is installed)
#   MEMORY_ROWS=100000,300000 bench/run_all.sh   # a shorter memory run
#
# Exit status: 0 when squall met every target, else the number of benchmarks that missed.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
MEMORY_ROWS="${MEMORY_ROWS:-100000,1000000}"
missed=0
"$PY" bench/pool.py || missed=$((missed + 1))
"$PY" bench/overhead.py || missed=$((missed + 1))
"$PY" bench/crash.py || missed=$((missed + 1))
"$PY" bench/batchapi.py || missed=$((missed + 1))
"$PY" bench/embeddings.py || missed=$((missed + 1))
"$PY" bench/memory.py --rows "$MEMORY_ROWS" || missed=$((missed + 1))
if "$PY" -c "import ray" 2>/dev/null; then
  "$PY" bench/ray.py || missed=$((missed + 1))
else
  echo "bench/ray skipped: Ray is not installed (pip install -e \".[ray]\")"
fi
echo "benchmarks whose targets squall missed: $missed"
exit "$missed"
