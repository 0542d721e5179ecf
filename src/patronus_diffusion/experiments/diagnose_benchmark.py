"""The shortcut detector, measured as a detector (`patronus diagnose-benchmark`; issue 37 part 2).

For every planted mark kind (:mod:`..data.marks`) and strength rho (phi(A, mark) in the training set; A =
footwear on Fashion-MNIST by default), build the set (the mark tied to A at rho, an independent control mark, a
blind coin column), train a model on it with a fixed step budget (by default fine-tuning the shipped
``pretrained:fashion-mnist``), and evaluate it (:mod:`.diagnose_benchmark_eval`): diagnose (A, mark) and
(not:A, mark), scan every attribute pair, and let an outside judge read the mark edit. The report
(:mod:`.diagnose_benchmark_report`) sets |score| against rho, the AUROC of |score| between planted and uncoupled
pairs, the scan's precision@1, false verdicts, naming agreement and steerability.

Layout of ``OUT``::

    benchmark.json      the study's settings and its plan (model names); a re-run must keep the settings
    data/KIND_rhoR/     the sets (images/, attributes.csv, marks.json); data/KIND_rho+0.00 is the clean set
    judges/             the outside judges (per kind, attribute and image size)
    runs/NAME/          the trained models (they resume)
    work/NAME/          each model's finished stages (both namings, scan, judge), so a model resumes mid-way
    evals/NAME.json     one model's evaluation, written atomically when it is complete: the study's record
    summary.md, *.csv, dose_response.png   rewritten from evals/ after every model (and by --report-only)

Re-running the same command skips every finished model and stage and logs the models left and the time they will
take at the measured pace. Strengths, kinds and seeds may be added to a stored study; every other setting must
match what ``benchmark.json`` recorded (else the stored evaluations would mean something else).
"""

from __future__ import annotations

import dataclasses

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from ..analysis.verdicts import DEFAULT_MIN_OWN_EFFECT
from ..utils.errors import UsageError
from ..utils.io import write_json

DEFAULT_KINDS = ("patch", "stripe")
DEFAULT_STRENGTHS = (0.0, 0.5, 0.75, 0.9, 1.0, -0.9)
DEFAULT_SEEDED = (0.0, 0.5, 0.75)  # the strengths that decide: the control and the edge of detection
DEFAULT_DIAGNOSE = {"n_images": 24, "seeds": 3, "top_k": 2, "steps": 25, "threshold": 0.2, "min_probe_auroc": 0.75,
                    "min_own_effect": DEFAULT_MIN_OWN_EFFECT, "edit_guidance": 0.0, "probe_limit": 4000,
                    "probe_epochs": 8}
# the own-effect floor of the studies stored before it was a setting (their benchmark.json lacks the key): the
# pilot and the tiny record were diagnosed with this floor, and keep their identity with it
LEGACY_MIN_OWN_EFFECT = 0.1
EXTENDABLE = ("mark_kinds", "strengths", "train_seeds", "seeded_strengths", "data_root", "record_note")


def _log(message: str) -> None:
    print(message, flush=True)


@dataclass
class BenchmarkSpec:
    mark_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STRENGTHS))
    train_seeds: int = 2
    seeded_strengths: list[float] = field(default_factory=lambda: list(DEFAULT_SEEDED))
    first_train_seed: int = 0
    train_steps: int = 1000
    init_from: str | None = "pretrained:fashion-mnist"
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    a_name: str = "footwear"
    classes: list[int] = field(default_factory=lambda: [0, 1, 7, 9])
    a_classes: list[int] = field(default_factory=lambda: [7, 9])
    n_train: int = 4000
    n_test: int = 800
    data_seed: int = 0
    data_root: str | None = None
    blind: bool = True
    diagnose: dict = field(default_factory=lambda: dict(DEFAULT_DIAGNOSE))
    scan: str = "pairwise"
    steer_n: int = 48
    judge_epochs: float = 4.0
    seed: int = 0
    record_note: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "BenchmarkSpec":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("diagnose"), dict) and "min_own_effect" not in d["diagnose"]:
            d["diagnose"] = {**d["diagnose"], "min_own_effect": LEGACY_MIN_OWN_EFFECT}
        return cls(**d)

    def validate(self) -> "BenchmarkSpec":
        from ..data.biased import cell_proportions
        from ..data.marks import check_kind

        if not self.mark_kinds:
            raise UsageError("give at least one mark kind (--marks)")
        for k in self.mark_kinds:
            check_kind(k)
        if len(set(self.mark_kinds)) != len(self.mark_kinds):
            raise UsageError(f"--marks lists a kind twice: {self.mark_kinds}")
        if not self.strengths:
            raise UsageError("give at least one strength (--strengths)")
        self.strengths = [float(r) + 0.0 for r in self.strengths]
        self.seeded_strengths = [float(r) + 0.0 for r in self.seeded_strengths]
        for r in self.strengths:
            if not -1 <= r <= 1:
                raise UsageError(f"--strengths: {r:g} is no correlation; every strength must lie in [-1, 1]")
            cell_proportions(r)
        if len({f"{r:+.2f}" for r in self.strengths}) != len(self.strengths):  # models and sets are named by it
            raise UsageError(f"--strengths lists a value twice (to 2 decimals): {self.strengths}")
        stray = [r for r in self.seeded_strengths if r not in self.strengths]
        if stray:
            raise UsageError(f"--seeded-strengths {stray} are not among --strengths {self.strengths}")
        for name, v, low in (("--train-seeds", self.train_seeds, 1), ("--train-steps", self.train_steps, 1),
                             ("--n-train", self.n_train, 8), ("--n-test", self.n_test, 8),
                             ("--steer-n", self.steer_n, 2), ("--first-train-seed", self.first_train_seed, 0)):
            if v < low:
                raise UsageError(f"{name} must be at least {low}, got {v}")
        if not self.judge_epochs > 0:
            raise UsageError(f"--judge-epochs must be positive, got {self.judge_epochs}")
        if not (self.init_from or self.preset):
            raise UsageError("give --init-from RUN (fine-tune) or --preset NAME (train from scratch)")
        from ..analysis.shortcut import check_settings
        from .diagnose_benchmark_eval import SCANS, shared_scan

        if self.scan not in SCANS:
            raise UsageError(f"--scan must be one of {', '.join(SCANS)}, got {self.scan!r}")
        if self.scan == "shared" and shared_scan() is None:
            raise UsageError("--scan shared needs analysis/scan.py (issue 37 part 4), which this installation lacks; "
                             "use --scan pairwise")

        d = self.diagnose
        check_settings(d["threshold"], d["edit_guidance"], d["min_probe_auroc"], 1.0, d["n_images"], d["seeds"],
                       d["top_k"], d["steps"], min_own_effect=d.get("min_own_effect", DEFAULT_MIN_OWN_EFFECT))
        return self

    def identity(self) -> dict:
        """The settings a stored evaluation depends on (everything but what may be extended)."""
        return {k: v for k, v in asdict(self).items() if k not in EXTENDABLE}


@dataclass(frozen=True)
class Point:
    kind: str
    rho: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.kind}_rho{self.rho:+.2f}_seed{self.seed}"


def plan_points(spec: BenchmarkSpec) -> list[Point]:
    """Every model of the study, seed-major: all kinds and strengths at the first seed before any second seed, so a
    partial study already holds a whole dose response."""
    seeds = {r: spec.train_seeds if r in spec.seeded_strengths else 1 for r in spec.strengths}
    return [Point(kind, rho, spec.first_train_seed + i) for i in range(max(seeds.values()))
            for kind in spec.mark_kinds for rho in spec.strengths if i < seeds[rho]]


def set_dir(out: Path, kind: str, rho: float) -> Path:
    return out / "data" / f"{kind}_rho{rho:+.2f}"


def _names(spec: BenchmarkSpec) -> list[str]:
    return [spec.a_name, "mark", "other_mark"] + (["coin"] if spec.blind else [])


# ----------------------------------------------------------------------------- the stored study
def load_study(out: Path) -> tuple[BenchmarkSpec, list[str]]:
    path = out / "benchmark.json"
    if not path.exists():
        raise UsageError(f"{out} holds no benchmark.json: run `patronus diagnose-benchmark --out {out}` first")
    stored = json.loads(path.read_text())
    return BenchmarkSpec.from_dict(stored["spec"]), stored["plan"]


def open_study(spec: BenchmarkSpec, out: Path) -> list[Point]:
    """Check ``spec`` against a stored study (its settings must match; kinds, strengths and seeds may grow), then
    record the spec and the plan (the stored plan's models first)."""
    path = out / "benchmark.json"
    points = plan_points(spec)
    plan = [p.name for p in points]
    if path.exists():
        stored, old_plan = load_study(out)
        mine, theirs = spec.identity(), stored.identity()
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff:
            stored_values = ", ".join(f"{k}: {theirs.get(k)!r}" for k in diff)
            raise UsageError(f"{out} holds a study with other settings ({stored_values}); run with those settings "
                             f"to continue it, or choose another --out")
        plan = old_plan + [n for n in plan if n not in old_plan]
        for k in ("mark_kinds", "strengths", "seeded_strengths"):  # the union, so the record describes every model
            setattr(spec, k, list(dict.fromkeys(getattr(stored, k) + getattr(spec, k))))
        spec.train_seeds = max(spec.train_seeds, stored.train_seeds)
    write_json(path, {"spec": asdict(spec), "plan": plan})
    by_name = {p.name: p for p in plan_points(spec)}
    return [by_name[n] for n in plan if n in by_name]


def stored_evals(out: Path, plan: list[str]) -> list[dict]:
    return [json.loads((out / "evals" / f"{n}.json").read_text()) for n in plan
            if (out / "evals" / f"{n}.json").exists()]


def rewrite_report(out: str | Path, figure: bool = True) -> dict[str, Path]:
    """Rewrite the tables (and figure) from ``OUT/benchmark.json`` and ``OUT/evals``, training nothing."""
    from .diagnose_benchmark_report import write_report

    out = Path(out)
    spec, plan = load_study(out)
    return write_report(out, asdict(spec), plan, stored_evals(out, plan), figure=figure)


# ----------------------------------------------------------------------------- training
def base_config(spec: BenchmarkSpec):
    from ..presets import get_preset
    from ..runs import read_run_config, resolve_run

    if spec.preset:
        return get_preset(spec.preset)
    cfg = read_run_config(resolve_run(spec.init_from))
    cfg.train.max_steps = cfg.train.max_epochs = cfg.train.max_minutes = None
    return cfg


def model_config(spec: BenchmarkSpec, data: Path, seed: int):
    from ..config import apply_overrides

    cfg = apply_overrides(base_config(spec), list(spec.overrides) + [
        "data.dataset=folder", f"data.root={data}", f"data.attributes_csv={data / 'attributes.csv'}",
        "data.limit=none", f"train.seed={seed}", "train.sample_every=0", "train.keep_checkpoints=1"])
    cfg.train.max_steps, cfg.train.max_epochs, cfg.train.max_minutes = spec.train_steps, None, None
    cfg.train.checkpoint_every = min(cfg.train.checkpoint_every or 250, 250)
    return cfg.validate()


def train_point(spec: BenchmarkSpec, data: Path, run_dir: Path, seed: int, device, progress: bool) -> dict:
    """Train (or finish training) one model; its wall-clock and CPU seconds add up over invocations."""
    from ..runs import latest_checkpoint, read_checkpoint_state
    from ..training import train

    spent_path = run_dir / "benchmark_train_seconds.json"
    spent = json.loads(spent_path.read_text()) if spent_path.exists() else {"seconds": 0.0, "cpu_seconds": 0.0}
    ck = latest_checkpoint(run_dir) if run_dir.exists() else None
    step = int(read_checkpoint_state(ck, verify=False)["step"]) if ck is not None else 0
    if step < spec.train_steps:
        t0, c0 = time.time(), time.process_time()
        train(model_config(spec, data, seed), run_dir, resume="if-present", device=device, progress=progress,
              init_from=None if spec.preset else spec.init_from)
        spent = {"seconds": round(spent["seconds"] + time.time() - t0, 1),
                 "cpu_seconds": round(spent["cpu_seconds"] + time.process_time() - c0, 1)}
        write_json(spent_path, spent)
    return {"steps": spec.train_steps, **spent}


# ----------------------------------------------------------------------------- the study
def _clean_cfg(pat, clean: Path):
    return dataclasses.replace(pat.config.data, dataset="folder", root=str(clean),
                               attributes_csv=str(clean / "attributes.csv"), limit=None)


def _judges(spec: BenchmarkSpec, out: Path, kind: str, probe_cfg) -> dict:
    """The outside judges of the mark and of A for one kind, on the clean set's real images at this resolution."""
    import numpy as np
    import torch

    from ..data import load_dataset
    from ..data.biased import resolve_attribute
    from .diagnose_benchmark_eval import attribute_judge

    judges = {}
    tr, te = load_dataset(probe_cfg, "train"), load_dataset(probe_cfg, "test")
    batch = lambda ds: torch.cat([ds.get_batch(list(range(i, min(i + 512, len(ds)))))  # noqa: E731
                                  for i in range(0, len(ds), 512)])
    xtr, xte = batch(tr), batch(te)
    for key, attr in (("mark", "mark"), ("a", spec.a_name)):
        path = out / "judges" / f"{kind}_{key}_{probe_cfg.image_size}px.safetensors"
        judges[key] = attribute_judge(path, attr, (xtr, np.asarray(resolve_attribute(tr, attr))),
                                      (xte, np.asarray(resolve_attribute(te, attr))), spec.judge_epochs)
    return judges


def _eta(left: int, paces: list[float]) -> str:
    if not left:
        return "[benchmark] every model is evaluated"
    if not paces:
        return f"[benchmark] {left} model(s) left; no pace measured yet"
    per = sum(paces) / len(paces)
    return (f"[benchmark] {left} model(s) left; {per / 60:.1f} min per model at the measured pace, about "
            f"{left * per / 3600:.1f} h to go")


@contextmanager
def study_lock(out: Path):
    """One process per study folder: OUT/.lock holds the running process's id; a lock whose process has ended is
    taken over, a live one refuses (two processes would train and write the same models)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            text = path.read_text().strip() if path.exists() else ""
            pid = int(text) if text.isdigit() else 0
            try:
                alive = pid > 0 and pid != os.getpid() and (os.kill(pid, 0) is None)
            except ProcessLookupError:
                alive = False
            except PermissionError:  # another user's live process
                alive = True
            if alive:
                raise UsageError(f"{out} is in use by process {pid} (its .lock): wait for it, or use another --out; "
                                 f"delete {path} only if no such study runs") from None
            path.unlink(missing_ok=True)
    else:
        raise UsageError(f"could not take {path}; delete it if no study runs in {out}")
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def run_benchmark(spec: BenchmarkSpec, out: str | Path, *, device: str | None = "auto", progress: bool = True,
                  log: Callable[[str], None] = _log) -> dict[str, Path]:
    """Run (or continue) the study into ``out`` (one process per folder); returns the report's files."""
    out = Path(out)
    spec.validate()
    with study_lock(out):
        return _run(spec, out, device, progress, log)


def _run(spec: BenchmarkSpec, out: Path, device, progress: bool, log: Callable[[str], None]) -> dict[str, Path]:
    from ..api import Patronus
    from ..data.marks import marked_set
    from .diagnose_benchmark_eval import evaluate_model

    points = open_study(spec, out)
    plan = [p.name for p in points]
    done = {n for n in plan if (out / "evals" / f"{n}.json").exists()}
    paces = [json.loads((out / "evals" / f"{n}.json").read_text())["seconds"]["total"] for n in sorted(done)]
    here: list[float] = []
    log(f"[benchmark] {len(plan)} model(s) planned, {len(done)} already evaluated in {out}")
    judges_by_kind: dict[str, dict] = {}
    set_kw = dict(classes=spec.classes, a_classes=spec.a_classes, a_name=spec.a_name, n_train=spec.n_train,
                  n_test=spec.n_test, seed=spec.data_seed, root=spec.data_root, blind=spec.blind)
    for k, p in enumerate(points):
        if p.name in done:
            continue
        log(_eta(len(plan) - len(done), here or paces))
        log(f"[benchmark] model {k + 1}/{len(plan)}: {p.name}")
        t0 = time.time()
        clean = set_dir(out, p.kind, 0.0)
        marked_set(clean, p.kind, 0.0, **set_kw)
        data = set_dir(out, p.kind, p.rho)
        data_summary = marked_set(data, p.kind, p.rho, **set_kw)
        trained = train_point(spec, data, out / "runs" / p.name, p.seed, device, progress)
        pat = Patronus.load(out / "runs" / p.name, device=device)
        probe_cfg = _clean_cfg(pat, clean)
        if p.kind not in judges_by_kind:
            judges_by_kind[p.kind] = _judges(spec, out, p.kind, probe_cfg)
        t1 = time.time()
        stages = evaluate_model(pat, a_name=spec.a_name, names=_names(spec), probe_cfg=probe_cfg,
                                judges=judges_by_kind[p.kind], diagnose_settings=spec.diagnose,
                                steer_n=spec.steer_n, seed=spec.seed, work=out / "work" / p.name, log=log,
                                scan=spec.scan)
        evaluate_s = sum(s.get("seconds", 0.0) for s in stages.values())
        ev = {"name": p.name, "kind": p.kind, "control_kind": data_summary["spec"]["control_kind"], "rho": p.rho,
              "train_seed": p.seed, "a_name": spec.a_name, "names": _names(spec),
              "data": {split: s["phi"] for split, s in data_summary["splits"].items()},
              "train": trained, "naming": {"a_b": stages["a_b"], "nota_b": stages["nota_b"]},
              "scan": stages["scan"], "judge": stages["judge"],
              "settings": {"diagnose": spec.diagnose, "scan": spec.scan, "seed": spec.seed, "steer_n": spec.steer_n},
              "seconds": {"train": trained["seconds"], "evaluate": round(evaluate_s, 1),
                          "total": round(trained["seconds"] + evaluate_s, 1),
                          "this_invocation": round(time.time() - t0, 1), "load": round(t1 - t0, 1)}}
        write_json(out / "evals" / f"{p.name}.json", ev)
        done.add(p.name)
        here.append(time.time() - t0)
        files = rewrite_report(out)
        log(f"[benchmark] {p.name}: (A, mark) {ev['naming']['a_b']['verdict']}, score "
            f"{ev['naming']['a_b']['score']}; report rewritten ({files['summary.md']})")
    log(_eta(0, []))
    return rewrite_report(out)
