#!/usr/bin/env bash
# Trains every unfinished RecBole run of data/peer/runs/ at once on a lent GPU machine (the
# `device` tool), where a RecBole SASRec epoch takes ~25 s instead of ~180-270 s on 2 cores.
#
# Here, once:
#   .venv/bin/python benchmarks/peer_quality.py --prepare-only   # data/peer/runs/<key>/spec.json
#   bash benchmarks/peer/on_device.sh wheels                      # .peerwheels/ (git-ignored)
# On the device (its python3 has torch with CUDA but no RecBole): run with
#   carry [".peerwheels", "data/peer"], command "BUDGET=480 bash benchmarks/peer/on_device.sh train"
# Back here: cat <files_at>/runs.tgz.part-* | tar -xz -C data/peer
#   then `benchmarks/peer_quality.py --cached-only` adopts every finished run; an unfinished one
#   resumes from its last epoch here or on the next lent machine.
#
# BUDGET (seconds) stops every run at that wall time, so the archive is written well inside the
# call's limit; a run killed mid-epoch resumes from its last finished one.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-.peerwheels}
PYTHON=${PYTHON:-python3}  # the device image's, which holds torch
RUNS=data/peer/runs

case "${1:-}" in
  wheels)
    # What RecBole 1.2.1 needs beyond the device image (Python 3.12, NumPy 2, pandas 3):
    # pandas < 3 and RecBole's own pins; --no-deps keeps the image's torch, numpy and scipy.
    rm -rf "$WHEELS"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$WHEELS" \
      recbole==1.2.1 colorlog==4.7.2 texttable==1.7.0 pandas==2.2.3 pytz==2024.2 tzdata==2024.2
    ls "$WHEELS"
    ;;
  train)
    : "${OUT:?train runs on the device machine, which sets OUT}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/peer-site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/peer-site PYTHONUNBUFFERED=1
    runner=$PWD/benchmarks/peer/recbole_runner.py
    for dir in "$RUNS"/*/; do
      [ -e "$dir/result.json" ] && continue
      echo "training $dir"
      # One CPU thread each: the 16 cores feed up to 16 runs' data loaders side by side.
      (cd "$dir" && PEER_THREADS=1 timeout "${BUDGET:-480}" "$PYTHON" "$runner" --spec spec.json \
        --out . > train.log 2>&1 || true) &
    done
    wait
    grep -h '^{"epoch' "$RUNS"/*/train.log | tail -n 20 || true
    # Finished runs need only result.json; unfinished ones their checkpoints to resume.
    (cd data/peer && find runs -name result.json -printf '%h\n' |
      xargs -r -I{} find {} -name '*.pt' > /tmp/finished-checkpoints)
    tar -cz -C data/peer -X /tmp/finished-checkpoints --exclude recbole_saved \
      --exclude log_tensorboard runs | split -b 15M - "$OUT/runs.tgz.part-"
    ls -l "$OUT"
    ;;
  *)
    echo "usage: $0 wheels|train (see the comments at the top)" >&2
    exit 2
    ;;
esac
