#!/usr/bin/env bash
# Carry a long run (or a tree of runs, e.g. `protodiff compare --out`) across sessions that keep only tracked
# files; see scripts/carry_run.py for what is copied.
#   bash scripts/carry_run.sh save    runs/pretrained-fmnist-v5 carry/pretrained-fmnist-v5
#   bash scripts/carry_run.sh restore carry/pretrained-fmnist-v5 runs/pretrained-fmnist-v5
exec python3 "$(dirname "$0")/carry_run.py" "$@"
