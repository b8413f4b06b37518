#!/usr/bin/env bash
# Every benchmark, each printing a ratio against a peer measured in the same run.
#   bench/run.sh
# Needs mosquitto (apt-get install mosquitto) and ONNX Runtime for Python
# (pip install -r models/requirements.txt); fails, saying so, without them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import onnxruntime, numpy" 2>/dev/null || pip install -q -r models/requirements.txt
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -m)"
for b in inference decode e2e; do
  echo; cargo bench -q --bench "$b" 2>/dev/null | grep -v '^$' || { echo "benchmark $b failed"; exit 1; }
done
