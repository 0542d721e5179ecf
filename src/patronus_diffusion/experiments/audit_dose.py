"""The audit's dose response (`patronus audit-dose`; issue 35): does `patronus audit` see a shortcut grow?

One generator, trained on a clean planted set of :mod:`..data.marks` (the mark independent of A, e.g. the
benchmark's ``data/patch_rho+0.00``), audits classifiers of A (footwear) trained where the mark co-occurs with A at
strength k = phi(A, mark) (default 1, 0.75, 0.5, 0), ``seeds`` classifiers per k. The sets hold the generator's own
images (the same classes, sizes and data seed, read from its set's ``marks.json``), marked at strength k. Each
classifier (:mod:`..evaluation.classifier`) is trained on its set's training split and scored on its own test split
and on the clean set's (accuracy per (A, mark) cell: the worst-group accuracy a shortcut lowers); then
:func:`..analysis.audit.audit` flips ``mark`` on balanced clean test images of the generator (A and the mark
independent among them, ``label=A``) and measures how far the classifier's p moves, against the null edit.
Expected: MAD rises with k, and at k = 0 its interval overlaps the null's. The report checks both, says yes or no,
and counts the counterfactuals the outside judge confirmed against the goal of 80 %.

Layout of ``OUT``::

    study.json            the settings, the generator (run, weights SHA-256, its set) and the plan
    data/KIND_rhoK/       the planted sets built here (``--data-out``); a set with the same spec already present
                          beside the generator's own set (or the generator's set itself, at k = 0) is used in place
    classifiers/NAME.pt   one TorchScript classifier per (k, seed), with NAME.json (its record)
    audits/NAME/          the audit's audit.json, audit.csv, audit.png
    points/NAME.json      one finished (k, seed): written last, so a re-run skips it
    judges/               the outside judge of the mark (trained once on the generator's training images)
    audit_dose.json/.csv/.md/.png   the report, rewritten after every point and by --report-only

A re-run continues; strengths and seeds may be added, every other setting must match ``study.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..utils.errors import UsageError
from ..utils.io import write_json

DEFAULT_STRENGTHS = (1.0, 0.75, 0.5, 0.0)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_CLASSIFIER = {"epochs": 5.0, "batch_size": 128, "lr": 3e-3, "range": "0,1", "limit": None}
DEFAULT_AUDIT = {"n": 96, "steps": 25, "top_k": 2, "edit_guidance": 0.0, "threshold": 0.05, "min_judge_auroc": 0.75,
                 "rank_limit": 4000, "seed": 0, "n_boot": 2000}
# may differ between invocations of one study: what may grow, and where things are found (the generator is
# identified by its weights' SHA-256, checked separately; a set by its spec)
NOT_IDENTITY = ("strengths", "seeds", "run", "data_out", "data_root", "generator_data", "record_note")


def _log(message: str) -> None:
    print(message, flush=True)


@dataclass
class DoseSpec:
    run: str
    mark: str | None = None
    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STRENGTHS))
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    data_out: str | None = None
    data_root: str | None = None
    generator_data: str | None = None
    classifier: dict = field(default_factory=lambda: dict(DEFAULT_CLASSIFIER))
    audit: dict = field(default_factory=lambda: dict(DEFAULT_AUDIT))
    record_note: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "DoseSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> "DoseSpec":
        from ..analysis.audit import check_settings as check_audit
        from ..data.biased import cell_proportions
        from ..data.marks import check_kind
        from ..evaluation.classifier import check_settings as check_classifier
        from ..evaluation.classifier import parse_input_range

        if self.mark is not None:
            check_kind(self.mark)
        if not self.strengths:
            raise UsageError("give at least one strength (--strengths)")
        self.strengths = [float(k) + 0.0 for k in self.strengths]
        for k in self.strengths:
            if not -1 <= k <= 1:
                raise UsageError(f"--strengths: {k:g} is no correlation; every strength must lie in [-1, 1]")
            cell_proportions(k)
        if len({f"{k:+.2f}" for k in self.strengths}) != len(self.strengths):  # sets and points are named by it
            raise UsageError(f"--strengths lists a value twice (to 2 decimals): {self.strengths}")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"--seeds must be distinct integers >= 0, got {self.seeds}")
        c, a = self.classifier, self.audit
        parse_input_range(c["range"])
        check_classifier(c["epochs"], c["batch_size"], c["lr"], c["limit"], None)
        check_audit(a["n"], a["steps"], a["top_k"], a["edit_guidance"], a["threshold"], a["min_judge_auroc"],
                    a["rank_limit"], a["n_boot"])
        return self

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in NOT_IDENTITY}


@dataclass(frozen=True)
class Point:
    k: float
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.k:+.2f}_seed{self.seed}"


def plan_points(spec: DoseSpec) -> list[Point]:
    """Seed-major: every strength at the first seed before any second seed, so a partial study is a dose response."""
    return [Point(k, s) for s in spec.seeds for k in spec.strengths]


# ----------------------------------------------------------------------------- the generator and its set
def _locate(path: str, run_dir: Path) -> Path | None:
    """A path from a run's config: as given (absolute, or relative to the working folder), else relative to a
    folder above the run (a study's runs store their data relative to where the study was started)."""
    p = Path(path)
    if p.is_absolute():
        return p if p.exists() else None
    for base in (Path.cwd(), *Path(run_dir).resolve().parents):
        if (base / p).exists():
            return (base / p).resolve()
    return None


def generator_set(pat, generator_data: str | None) -> tuple[Path, dict]:
    """The generator's planted set (located, and set into ``pat.config.data``) and its marks.json."""
    d, run_dir = pat.config.data, Path(pat.run_dir or ".")
    if generator_data is None and (d.dataset != "folder" or not d.root):
        raise UsageError(f"the generator {run_dir} was trained on {d.dataset!r}, not on a planted set of "
                         f"data/marks.py; train it on a clean set (e.g. diagnose-benchmark's data/patch_rho+0.00)")
    root = Path(generator_data).resolve() if generator_data else _locate(d.root, run_dir)
    if root is None or not root.is_dir():
        raise UsageError(f"cannot find the generator's data {generator_data or d.root!r} (from the working folder "
                         f"or a folder above {run_dir}); pass --generator-data DIR")
    marks = root / "marks.json"
    if not marks.exists():
        raise UsageError(f"the generator's data {root} holds no marks.json: it is not a set of data/marks.py "
                         f"(build one with diagnose-benchmark, or pass --generator-data DIR)")
    summary = json.loads(marks.read_text())
    csv = root / "attributes.csv"
    if generator_data is None and d.attributes_csv:
        csv = _locate(d.attributes_csv, run_dir) or csv
    pat.config.data.root, pat.config.data.attributes_csv = str(root), str(csv)
    return root, summary


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def set_name(kind: str, k: float) -> str:
    from .diagnose_benchmark import set_dir

    return set_dir(Path("."), kind, k).name  # the benchmark's naming, so its sets serve here


def ensure_set(k: float, gen_root: Path, gen_spec: dict, data_out: Path, data_root: str | None,
               log: Callable[[str], None]) -> tuple[Path, dict, str]:
    """The set at strength k with the generator's images: one already complete with the same spec (the generator's
    own set, one beside it, or one in ``data_out``) is used in place; else it is built in ``data_out``."""
    from ..data.marks import marked_set, set_spec

    s = gen_spec
    kw = dict(classes=s["classes"], a_classes=s["a_classes"], a_name=s["a_name"], n_train=s["n_train"],
              n_test=s["n_test"], seed=s["seed"], blind=s["blind"])
    wanted = set_spec(s["kind"], k, **kw)
    name = set_name(s["kind"], k)
    for where, path in (("the generator's own set", gen_root), ("beside the generator's set", gen_root.parent / name),
                        ("--data-out", data_out / name)):
        marks = path / "marks.json"
        if marks.exists():
            summary = json.loads(marks.read_text())
            if summary.get("spec") == wanted:
                return path, summary, where
    log(f"[audit-dose] building the set at k = {k:g} in {data_out / name}")
    return data_out / name, marked_set(data_out / name, s["kind"], k, root=data_root, **kw), "built"


# ----------------------------------------------------------------------------- the stored study
def load_study(out: Path) -> dict:
    path = out / "study.json"
    if not path.exists():
        raise UsageError(f"{out} holds no study.json: run `patronus audit-dose --run RUN --out {out}` first")
    return json.loads(path.read_text())


def open_study(spec: DoseSpec, out: Path, generator: dict) -> list[Point]:
    """Check ``spec`` and the generator against a stored study (strengths and seeds may grow), then record them."""
    points = plan_points(spec)
    plan = [p.name for p in points]
    if (out / "study.json").exists():
        stored = load_study(out)
        theirs, mine = DoseSpec.from_dict(stored["spec"]).identity(), spec.identity()
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff:
            raise UsageError(f"{out} holds a study with other settings ("
                             + ", ".join(f"{k}: {theirs.get(k)!r}" for k in diff)
                             + "); run with those settings to continue it, or choose another --out")
        g = stored["generator"]
        if g["weights_sha256"] != generator["weights_sha256"]:
            raise UsageError(f"the generator's weights changed since {out} was started (SHA-256 "
                             f"{g['weights_sha256'][:12]} then, {generator['weights_sha256'][:12]} now); use another "
                             f"--out")
        old = DoseSpec.from_dict(stored["spec"])
        spec.strengths = list(dict.fromkeys(old.strengths + spec.strengths))
        spec.seeds = list(dict.fromkeys(old.seeds + spec.seeds))
        plan = stored["plan"] + [n for n in plan if n not in stored["plan"]]
    write_json(out / "study.json", {"spec": asdict(spec), "generator": generator, "plan": plan})
    by_name = {p.name: p for p in plan_points(spec)}
    return [by_name[n] for n in plan if n in by_name]


def stored_points(out: Path, plan: list[str]) -> list[dict]:
    return [json.loads((out / "points" / f"{n}.json").read_text()) for n in plan
            if (out / "points" / f"{n}.json").exists()]


def rewrite_report(out: str | Path, figure: bool = True) -> dict[str, Path]:
    """Rewrite audit_dose.json/.csv/.md (and .png) from ``OUT/study.json`` and ``OUT/points``; runs nothing."""
    from .audit_dose_report import write_report

    out = Path(out)
    study = load_study(out)
    return write_report(out, study, stored_points(out, study["plan"]), figure=figure)


# ----------------------------------------------------------------------------- one point
def _classifier(spec: DoseSpec, p: Point, data_cfg, set_spec: dict, clean_cfg, a_name: str, out: Path, device,
                progress: bool):
    """Train the (k, seed) classifier, or reuse the one stored with the same key (the set's spec, not its place)."""
    from ..evaluation.classifier import train_classifier

    c = spec.classifier
    key = {"set_spec": set_spec, "data_root": spec.data_root, "seed": p.seed, **c}
    path = out / "classifiers" / f"{p.name}.pt"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        record = json.loads(meta.read_text())
        if record.get("audit_dose_key") == key:
            return path, record
    record = train_classifier(data_cfg, a_name, path, epochs=c["epochs"], seed=p.seed, value_range=c["range"],
                              limit=c["limit"], groups=["mark"], eval_cfg=clean_cfg, batch_size=c["batch_size"],
                              lr=c["lr"], device=device, progress=progress)
    record["audit_dose_key"] = key
    write_json(meta, record)
    return path, record


def _point_record(p: Point, set_path: Path, set_summary: dict, where: str, a_name: str, clf: dict, rep: dict,
                  seconds: dict) -> dict:
    m = rep["measures"]
    clean = clf.get("eval") or {}
    clean_groups = (clean.get("groups") or {}).get("mark") or {}
    own_groups = (clf["test"].get("groups") or {}).get("mark") or {}
    phi = {split: v["phi"].get(f"{a_name},mark") for split, v in set_summary["splits"].items()}
    keep = ("n", "edit", "edit_ci95", "null", "null_ci95", "difference", "difference_ci95")
    return {
        "name": p.name, "k": p.k, "seed": p.seed,
        "set": {"path": str(set_path), "source": where, "phi": phi},
        "classifier": {"file": clf["file"], "sha256": clf["sha256"], "train_accuracy": clf["train_accuracy"],
                       "test_accuracy": clf["test_accuracy"], "test_auroc": clf["test_auroc"],
                       "test_worst_group_accuracy": own_groups.get("worst_group_accuracy"),
                       "clean_accuracy": clean.get("accuracy"), "clean_auroc": clean.get("auroc"),
                       "clean_worst_group_accuracy": clean_groups.get("worst_group_accuracy"),
                       "clean_worst_group": clean_groups.get("worst_group"),
                       "clean_cells": clean_groups.get("cells"), "seconds": clf["seconds"],
                       "cpu_seconds": clf["cpu_seconds"]},
        "audit": {"verdict": rep["verdict"], "reason": rep["reason"],
                  **{key: {f: m[key][f] for f in keep} for key in ("MAD", "MD_with", "MD_without")},
                  "MAD_reconstruction": m["MAD_reconstruction"],
                  "auroc_label_real": m["auroc_label"]["real"]["auroc"],
                  "auroc_label_counterfactual": m["auroc_label"]["counterfactual"]["auroc"],
                  "counts": rep["counts"], "judge_test_auroc": rep["judge"]["test_auroc"],
                  "prototypes": [e["prototype"] for e in rep["prototypes"]["edited"]],
                  "null_prototypes": [e["prototype"] for e in rep["prototypes"]["null"]],
                  "seconds": rep["seconds"]},
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------- the study
def run_dose(spec: DoseSpec, out: str | Path, *, device: str | None = "auto", progress: bool = True,
             log: Callable[[str], None] = _log) -> dict[str, Path]:
    """Run (or continue) the dose study into ``out`` (one process per folder); returns the report's files."""
    from .diagnose_benchmark import study_lock

    out = Path(out)
    spec.validate()
    with study_lock(out):
        return _run(spec, out, device, progress, log)


def _run(spec: DoseSpec, out: Path, device, progress: bool, log: Callable[[str], None]) -> dict[str, Path]:
    from ..analysis.audit import audit
    from ..api import Patronus
    from ..utils.device import pick_device

    dev = pick_device(device)
    pat = Patronus.load(spec.run, device=str(dev))
    gen_root, gen_summary = generator_set(pat, spec.generator_data)
    gen_spec = gen_summary["spec"]
    if abs(gen_spec["correlation"]) > 1e-9:
        raise UsageError(f"the generator was trained on {gen_root}, where phi({gen_spec['a_name']}, mark) = "
                         f"{gen_spec['correlation']:g}; the audit needs a generator trained on the clean set "
                         f"(correlation 0), where the mark varies independently")
    if spec.mark is not None and spec.mark != gen_spec["kind"]:
        raise UsageError(f"--mark {spec.mark}: the generator's set plants {gen_spec['kind']!r}, and the audit flips "
                         f"the mark the generator knows; use --mark {gen_spec['kind']}")
    spec.mark = gen_spec["kind"]
    a_name = gen_spec["a_name"]
    data_out = Path(spec.data_out) if spec.data_out else out / "data"
    generator = {"run": str(Path(pat.run_dir).resolve()) if pat.run_dir else spec.run,
                 "weights": str(pat.weights_path), "weights_sha256": _digest(Path(pat.weights_path)),
                 "data": str(gen_root), "set_spec": gen_spec, "a_name": a_name,
                 "image_size": pat.config.data.image_size, "channels": pat.config.data.channels}
    if pat.run_dir is not None and not (Path(pat.run_dir) / "train_summary.json").exists():
        log(f"[audit-dose] warning: {pat.run_dir} has no train_summary.json: if its training still runs, these audits "
            f"use {pat.weights_path}, and a later run of this study refuses the changed weights")
    points = open_study(spec, out, generator)
    plan = [p.name for p in points]
    done = {n for n in plan if (out / "points" / f"{n}.json").exists()}
    log(f"[audit-dose] {len(plan)} audit(s) planned, {len(done)} already done in {out}; generator {generator['run']} "
        f"(trained on {gen_root})")
    clean_cfg = dataclasses.replace(pat.config.data, limit=None)
    paces: list[float] = []
    for i, p in enumerate(points):
        if p.name in done:
            continue
        left = len(plan) - len(done)
        eta = f"; about {left * sum(paces) / len(paces) / 60:.0f} min to go" if paces else ""
        log(f"[audit-dose] {i + 1}/{len(plan)}: k = {p.k:g}, classifier seed {p.seed} ({left} left{eta})")
        t0 = time.time()
        set_path, set_summary, where = ensure_set(p.k, gen_root, gen_spec, data_out, spec.data_root, log)
        t1 = time.time()
        data_cfg = dataclasses.replace(pat.config.data, root=str(set_path),
                                       attributes_csv=str(set_path / "attributes.csv"), limit=None)
        clf_path, clf = _classifier(spec, p, data_cfg, set_summary["spec"], clean_cfg, a_name, out, dev,
                                    progress)
        t2 = time.time()
        a = spec.audit
        result = audit(pat, clf_path, "mark", label=a_name, n=a["n"], top_k=a["top_k"], steps=a["steps"],
                       edit_guidance=a["edit_guidance"], threshold=a["threshold"],
                       min_judge_auroc=a["min_judge_auroc"], rank_limit=a["rank_limit"], seed=a["seed"],
                       n_boot=a["n_boot"], classifier_range=spec.classifier["range"], judge_cache=out / "judges",
                       progress=progress)
        result.write(out / "audits" / p.name)
        t3 = time.time()
        seconds = {"set": round(t1 - t0, 1), "classifier": round(t2 - t1, 1), "audit": round(t3 - t2, 1),
                   "total": round(t3 - t0, 1)}
        record = _point_record(p, set_path, set_summary, where, a_name, clf, result.report, seconds)
        write_json(out / "points" / f"{p.name}.json", record)
        done.add(p.name)
        paces.append(t3 - t0)
        m = record["audit"]["MAD"]
        mad = "no confirmed counterfactual" if m["edit"] is None else f"MAD {m['edit']:.3f} vs null {m['null']:.3f}"
        log(f"[audit-dose] {p.name}: {record['audit']['verdict']}, {mad}; classifier test accuracy "
            f"{clf['test_accuracy']:.3f}, clean worst group {record['classifier']['clean_worst_group_accuracy']}")
        rewrite_report(out)
    return rewrite_report(out)
