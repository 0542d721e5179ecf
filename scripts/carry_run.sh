#!/usr/bin/env bash
# Carry a long training run across machines or sessions that keep only tracked files: copy the run's newest
# checkpoint (model, EMA, optimizer, state with checksums) with its config, pointer and logs into a folder you
# commit, and later copy it back and continue with --resume.
#   bash scripts/carry_run.sh save    runs/pretrained-fmnist-v5 carry/pretrained-fmnist-v5
#   bash scripts/carry_run.sh restore carry/pretrained-fmnist-v5 runs/pretrained-fmnist-v5
# A cpu-small checkpoint is about 21 MB. `restore` refuses to overwrite a run that is further along.
set -euo pipefail
cmd=${1:?save|restore}; src=${2:?source}; dst=${3:?destination}
src=${src%/}; dst=${dst%/}
step_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$1/latest.json"; }
case "$cmd" in
  save)
    [ -f "$src/latest.json" ] || { echo "carry_run: $src has no latest.json (not a run with a checkpoint)" >&2; exit 2; }
    # read the pointer once and carry exactly what it names (a training may write a newer checkpoint meanwhile)
    pointer=$(cat "$src/latest.json")
    ck=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['checkpoint'])" "$pointer")
    tmp="$dst.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp/$(dirname "$ck")"
    cp -r "$src/$ck" "$tmp/$ck"
    for f in config.json train_log.csv train_summary.json; do if [ -f "$src/$f" ]; then cp "$src/$f" "$tmp/"; fi; done
    printf '%s\n' "$pointer" > "$tmp/latest.json"
    rm -rf "$dst"; mv "$tmp" "$dst"
    echo "carry_run: saved step $(step_of "$dst") of $src -> $dst ($(du -sh "$dst" | cut -f1))" ;;
  restore)
    [ -f "$src/latest.json" ] || { echo "carry_run: $src holds no carried run" >&2; exit 2; }
    if [ -f "$dst/latest.json" ] && [ "$(step_of "$dst")" -ge "$(step_of "$src")" ]; then
      echo "carry_run: $dst is already at step $(step_of "$dst") >= $(step_of "$src"); nothing to restore"; exit 0
    fi
    mkdir -p "$dst"; cp -r "$src"/. "$dst"/
    echo "carry_run: restored step $(step_of "$dst") into $dst; continue with the run's own command (--resume-if-present)" ;;
  *) echo "carry_run: the first argument is save or restore" >&2; exit 2 ;;
esac
