#!/usr/bin/env python3
"""Carry long runs across machines or sessions that keep only tracked files.

``save SRC DST`` copies a run folder, or a folder tree holding several runs (``protodiff compare --out``), into a
folder you commit: every file outside ``checkpoints/`` folders (configs, logs, evaluations, sample grids, caches)
and, for each run (a folder with ``latest.json``), only the checkpoint its pointer names (model, EMA, optimizer,
state with checksums). ``restore DST SRC`` copies it back; the run then continues with its own ``--resume``
command. Restoring never moves a run backwards (a run already at or past the carried step is left alone) and
never overwrites a file outside the runs (results written since are kept).

    python scripts/carry_run.py save    runs/pretrained-fmnist-v5 carry/pretrained-fmnist-v5
    python scripts/carry_run.py restore carry/pretrained-fmnist-v5 runs/pretrained-fmnist-v5

A cpu-small checkpoint is about 21 MB; files over ``--max-file-mb`` outside checkpoints are left out (listed).
``--exclude PATTERN`` (repeatable, shell-style, matched against each path relative to SRC and its parent folders)
leaves out what a study rebuilds or no longer needs, e.g. a ``diagnose-benchmark`` study's data sets and the runs
of models already evaluated (only those with ``evals/NAME.json``: a run still training must travel):

    python scripts/carry_run.py save results/diagnose-benchmark carry/diagnose-benchmark \
        --exclude 'data' --exclude 'judges' --exclude 'runs/EVALUATED_NAME'
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

POINTER = "latest.json"
CHECKPOINTS = "checkpoints"


class CarryError(Exception):
    """Bad input: said in one line, exit status 2."""


def read_pointer(run: Path) -> dict:
    """The run's pointer as written by the trainer (``checkpoint``, ``step`` and whatever else it holds)."""
    try:
        pointer = json.loads((run / POINTER).read_text())
        int(pointer["step"])
        ck = Path(str(pointer["checkpoint"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CarryError(f"{run / POINTER} is not a checkpoint pointer ({e!r})") from None
    if ck.is_absolute() or ".." in ck.parts or not ck.parts:
        raise CarryError(f"{run / POINTER} names {str(ck)!r}, not a folder inside the run")
    return pointer


def find_runs(root: Path) -> list[Path]:
    """Run folders under ``root`` (itself included), as paths relative to it; none inside a checkpoints folder."""
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != CHECKPOINTS and not d.startswith(".tmp-carry"))
        if POINTER in filenames:
            runs.append(Path(dirpath).relative_to(root))
    return runs


def plain_files(root: Path) -> list[Path]:
    """Every file under ``root`` outside ``checkpoints/`` folders, relative to it."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != CHECKPOINTS and not d.startswith(".tmp-carry"))
        files += [Path(dirpath, f).relative_to(root) for f in sorted(filenames)]
    return files


def excluded(rel: Path, patterns: list[str]) -> bool:
    """Whether ``rel`` or one of its parent folders matches one of the shell-style ``patterns``."""
    candidates = [rel, *rel.parents][:-1] if rel != Path(".") else []
    return any(fnmatch.fnmatchcase(str(c), p) for c in candidates for p in patterns)


def save(src: Path, dst: Path, max_file_mb: float = 50.0, exclude: list[str] | None = None) -> dict:
    """Copy ``src`` (a run or a tree of runs) into ``dst``, replacing it only once the copy is complete."""
    exclude = list(exclude or [])
    if not src.is_dir():
        raise CarryError(f"{src} is not a folder")
    if dst.resolve().is_relative_to(src.resolve()):
        raise CarryError(f"the destination {dst} lies inside {src}; carry it elsewhere (e.g. carry/NAME)")
    runs = [r for r in find_runs(src) if not excluded(r, exclude)]
    if not runs:
        raise CarryError(f"{src} holds no run (no {POINTER} in it or below it"
                         f"{', outside --exclude' if exclude else ''})")
    tmp = dst.parent / f".tmp-carry-{dst.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    steps, left_out = {}, []
    try:
        for rel in plain_files(src):
            if rel.name == POINTER or excluded(rel, exclude):
                continue  # the pointer is written below from the one reading the copied checkpoint is chosen by
            size_mb = (src / rel).stat().st_size / 2**20
            if size_mb > max_file_mb:
                left_out.append(f"{rel} ({size_mb:.0f} MB)")
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp / rel)
        for run in runs:
            pointer = read_pointer(src / run)  # read once: a training may write a newer checkpoint meanwhile
            ck = src / run / pointer["checkpoint"]
            if not ck.is_dir():
                raise CarryError(f"{src / run / POINTER} names {pointer['checkpoint']}, which is missing")
            shutil.copytree(ck, tmp / run / pointer["checkpoint"])
            (tmp / run / POINTER).write_text(json.dumps(pointer, indent=2) + "\n")
            steps[str(run)] = pointer["step"]
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": steps, "left_out": left_out}


def ignored_by_git(folder: Path) -> list[str]:
    """Files under ``folder`` that git would not commit (a ``.gitignore`` rule matches them), with the rule.

    A carry travels only as committed files: a rule such as ``runs/`` silently drops the checkpoints of a study's
    runs, and the next session finds nothing to resume. Empty when ``folder`` is not inside a git work tree."""
    rels = [str(f.relative_to(folder)) for f in sorted(folder.rglob("*")) if f.is_file()]
    if not rels:
        return []
    try:
        r = subprocess.run(["git", "check-ignore", "--no-index", "--verbose", "--stdin"], cwd=folder,
                           input="\n".join(rels) + "\n", capture_output=True, text=True)
    except FileNotFoundError:  # no git on this machine: nothing to check against
        return []
    if r.returncode not in (0, 1):  # 128: not a git work tree
        return []
    hits = []
    for line in r.stdout.splitlines():  # SOURCE:LINENUM:PATTERN<TAB>PATH
        rule, _, path = line.partition("\t")
        hits.append(f"{path} (ignored by {rule})")
    return hits


def owning_run(rel: Path, runs: list[Path]) -> Path | None:
    """The deepest run folder that holds the file ``rel`` (all paths relative to one root), or None."""
    holders = [r for r in runs if r == Path(".") or rel.is_relative_to(r)]
    return max(holders, key=lambda r: len(r.parts), default=None)


def restore(src: Path, dst: Path) -> dict:
    """Copy a carried folder back; runs only forwards, files outside the runs only where absent."""
    runs = find_runs(src) if src.is_dir() else []
    if not runs:
        raise CarryError(f"{src} holds no carried run")
    pointers = {run: read_pointer(src / run) for run in runs}
    missing = [str(src / run / p["checkpoint"]) for run, p in pointers.items() if not (src / run / p["checkpoint"]).is_dir()]
    if missing:
        raise CarryError(f"the carried checkpoint(s) {', '.join(missing)} are missing; nothing was restored")
    restored, kept = {}, {}
    for run in runs:
        here = dst / run
        if (here / POINTER).exists() and read_pointer(here)["step"] >= pointers[run]["step"]:
            kept[str(run)] = read_pointer(here)["step"]
    # checkpoints first, then logs and configs, then the pointers: an interrupted restore leaves every run at
    # its old pointer with nothing newer beside it than a checkpoint it does not name yet
    for run in runs:
        if str(run) not in kept:
            ck = pointers[run]["checkpoint"]
            shutil.copytree(src / run / ck, dst / run / ck, dirs_exist_ok=True)
    copied = 0
    for rel in plain_files(src):
        owner = owning_run(rel, runs)
        if rel.name == POINTER or (owner is not None and str(owner) in kept):
            continue
        if owner is None and (dst / rel).exists():
            continue  # a result written since the carry is kept
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
        copied += owner is None
    for run in runs:
        if str(run) in kept:
            continue
        # the pointer last, so an interrupted restore never names a checkpoint that is not whole
        (dst / run / POINTER).write_text(json.dumps(pointers[run], indent=2) + "\n")
        restored[str(run)] = pointers[run]["step"]
    return {"restored": restored, "kept": kept, "other_files_copied": copied}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("command", choices=("save", "restore"))
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p.add_argument("--max-file-mb", type=float, default=50.0, help="save: leave out bigger files outside checkpoints")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="save: leave out paths (relative to SOURCE) matching this shell pattern, and what lies below")
    a = p.parse_args(argv)
    try:
        if a.command == "save":
            r = save(a.source, a.destination, a.max_file_mb, a.exclude)
            for run, step in r["runs"].items():
                print(f"carry_run: saved {a.source / run} at step {step}")
            for f in r["left_out"]:
                print(f"carry_run: left out {f}", file=sys.stderr)
            size = sum(f.stat().st_size for f in a.destination.rglob("*") if f.is_file()) / 2**20
            print(f"carry_run: -> {a.destination} ({size:.1f} MB)")
            hidden = ignored_by_git(a.destination)
            if hidden:
                more = f"\n  ... and {len(hidden) - 10} more" if len(hidden) > 10 else ""
                shown = "\n  ".join(hidden[:10]) + more
                raise CarryError(f"{len(hidden)} saved file(s) would not be committed, so the carry would not "
                                 f"travel:\n  {shown}\nadd a negation for them to .gitignore (e.g. "
                                 f"'!/carry/**/runs/') and save again")
        else:
            r = restore(a.source, a.destination)
            for run, step in r["restored"].items():
                print(f"carry_run: restored step {step} into {a.destination / run}")
            for run, step in r["kept"].items():
                print(f"carry_run: {a.destination / run} is already at step {step}; left as it is")
            print(f"carry_run: {r['other_files_copied']} other file(s) copied; continue each run with its own "
                  f"command (--resume-if-present)")
    except CarryError as e:
        print(f"carry_run: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
