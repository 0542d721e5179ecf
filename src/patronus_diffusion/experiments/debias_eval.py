"""Does a debias set help a classifier? (`patronus debias-eval`; issue 35 part 2)

A classifier for B (the label; the debias set's second attribute) is trained on

* ``real``: the run's biased real training data (where A and B are tied);
* ``real+debias``: the same plus the debias set of ``patronus debias`` (its B and A as the judges read them),
  mixed by plain concatenation and shuffled together;
* ``debias``: the debias set alone (does what was generated teach B as real images show it?);
* ``real-balanced``: the real data sampled so that every (A, B) group is equally likely (group-balanced
  resampling with the real labels): what reweighting achieves without generated images;

with ``seeds`` seeds each (the seed sets the network's initialisation and its batches), the same number of steps
for every variant, and evaluated on a **balanced real test set**: the same number of test images from each (A, B)
cell of the run's test split (or of ``test_data``'s test split), drawn once with ``test_seed``. Reported per
variant: each group's accuracy, the worst-group accuracy and the mean over groups, with 95 % t-intervals over
seeds, and the paired difference of each variant from ``real`` (the same seeds), whose interval gives the verdict:
``helps`` (above 0), ``hurts`` (below 0), ``no difference detected``.

The classifier is ``patronus train-classifier``'s small CNN, trained by the same code
(:func:`~patronus_diffusion.evaluation.classifier.fit_classifier`, on images in memory for ``steps`` batches; a
seeded shuffle, or group-balanced draws for ``real-balanced``). Each (variant, seed) is stored in ``OUT/evals/`` as
soon as it is done, so a re-run continues; ``debias_eval.json``, ``.csv``, ``.md`` and ``.png`` are rewritten from
them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..evaluation.classifier import ARCHITECTURE, fit_classifier, probabilities
from ..utils.errors import UsageError
from ..utils.io import write_json

VARIANTS = ("real", "real+debias", "debias", "real-balanced")
CLASSIFIER = "patronus_diffusion.evaluation.classifier.fit_classifier (the network of patronus train-classifier)"
GROUPS = ((1, 1), (1, 0), (0, 1), (0, 0))  # (a, b)


def _log(message: str) -> None:
    print(message, flush=True)


@dataclass
class EvalSpec:
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seeds: int = 3
    first_seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    test_per_cell: int | None = None
    test_data: str | None = None
    test_seed: int = 0

    def plan(self) -> list[tuple[str, int]]:
        """Every (variant, seed) the study trains, seed by seed."""
        return [(v, s) for s in range(self.first_seed, self.first_seed + self.seeds) for v in self.variants]

    def validate(self) -> "EvalSpec":
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise UsageError(f"--variants must name some of {', '.join(VARIANTS)}; got {','.join(self.variants)!r}")
        if "real" not in self.variants:
            raise UsageError("--variants must include real: every other variant is compared with it")
        for name, v, low in (("--seeds", self.seeds, 1), ("--steps", self.steps, 1),
                             ("--batch-size", self.batch_size, 2), ("--first-seed", self.first_seed, 0)):
            if v < low:
                raise UsageError(f"{name} must be at least {low}, got {v}")
        if self.test_per_cell is not None and self.test_per_cell < 2:
            raise UsageError(f"--test-per-cell must be at least 2, got {self.test_per_cell}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.test_data is not None and not (Path(self.test_data) / "attributes.csv").exists():
            raise UsageError(f"--test-data {self.test_data} holds no attributes.csv (a folder set in the toolkit's "
                             f"format, e.g. data/patch_rho+0.00 of a diagnose-benchmark)")
        return self


# ----------------------------------------------------------------------------- data
def _all(ds) -> torch.Tensor:
    return torch.cat([ds.get_batch(list(range(i, min(i + 512, len(ds))))) for i in range(0, len(ds), 512)])


def read_debias(debias_dir: str | Path) -> dict:
    path = Path(debias_dir) / "debias.json"
    if not path.exists():
        raise UsageError(f"--debias {debias_dir} holds no debias.json; make the set with `patronus debias` first")
    report = json.loads(path.read_text())
    if not report.get("n_written"):
        raise UsageError(f"the debias set in {debias_dir} holds no image")
    return report


def load_sets(data_cfg, debias_dir: str | Path, spec: EvalSpec) -> dict:
    """{"real", "debias", "test"}: (images, a, b) each (a, b bool); the test set balanced over the (A, B) cells."""
    from ..analysis.debias_folder import base_attribute
    from ..data import load_dataset
    from ..data.biased import resolve_attribute

    report = read_debias(debias_dir)
    a, b = base_attribute(report["a"]), base_attribute(report["b"])
    real = load_dataset(data_cfg, "train")
    d = Path(debias_dir)
    gen = load_dataset(dataclasses.replace(data_cfg, dataset="folder", root=str(d),
                                           attributes_csv=str(d / "attributes.csv"), limit=None), "train")
    test_cfg = data_cfg if spec.test_data is None else dataclasses.replace(
        data_cfg, dataset="folder", root=str(spec.test_data),
        attributes_csv=str(Path(spec.test_data) / "attributes.csv"), limit=None)
    test = load_dataset(test_cfg, "test")
    ta, tb = resolve_attribute(test, a), resolve_attribute(test, b)
    pools = {g: np.flatnonzero((ta == bool(g[0])) & (tb == bool(g[1]))) for g in GROUPS}
    smallest = min(len(p) for p in pools.values())
    k = spec.test_per_cell or smallest
    if k > smallest or smallest < 2:
        sizes = ", ".join(f"{a}={g[0]},{b}={g[1]}: {len(p)}" for g, p in pools.items())
        raise UsageError(f"the test split has too few images in a cell for {k} per cell ({sizes}); lower "
                         f"--test-per-cell or pass --test-data with a larger set")
    rng = np.random.default_rng(spec.test_seed)
    idx = np.sort(np.concatenate([rng.choice(p, k, replace=False) for p in pools.values()]))
    return {"real": (_all(real), resolve_attribute(real, a), resolve_attribute(real, b)),
            "debias": (_all(gen), gen.attributes[:, list(gen.attribute_names).index(report["column_a"])] > 0.5,
                       gen.attributes[:, list(gen.attribute_names).index(report["column_b"])] > 0.5),
            "test": (test.get_batch(idx.tolist()), ta[idx], tb[idx]), "a": a, "b": b, "report": report,
            "test_per_cell": int(k), "test_source": spec.test_data or "the run's test split"}


def training_set(sets: dict, variant: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor | None, dict]:
    """(images, a, b, sampling weights or None for a plain shuffle, description) of one variant."""
    xr, ar, br = sets["real"]
    xd, ad, bd = sets["debias"]
    if variant == "real":
        x, a, b = xr, ar, br
    elif variant == "debias":
        x, a, b = xd, ad, bd
    else:
        x, a, b = (torch.cat([xr, xd]), np.concatenate([ar, ad]), np.concatenate([br, bd])) \
            if variant == "real+debias" else (xr, ar, br)
    weights = None
    if variant == "real-balanced":
        code = 2 * a.astype(int) + b.astype(int)
        counts = np.bincount(code, minlength=4).astype(np.float64)
        weights = torch.as_tensor(1.0 / counts[code])
    from ..data.biased import phi

    n_real = len(xr) if variant != "debias" else 0
    desc = {"n": int(len(x)), "n_real": n_real, "n_debias": int(len(x)) - n_real,
            "phi_a_b": phi(a, b), "sampling": "group-balanced" if weights is not None else "shuffled",
            "groups": {f"{g[0]},{g[1]}": int(((a == bool(g[0])) & (b == bool(g[1]))).sum()) for g in GROUPS}}
    return x, a, b, weights, desc


# ----------------------------------------------------------------------------- the classifier
def train_variant(sets: dict, variant: str, seed: int, spec: EvalSpec, device, progress: bool = False):
    """The classifier of B for one (variant, seed), trained with ``patronus train-classifier``'s network and
    training (:func:`~patronus_diffusion.evaluation.classifier.fit_classifier`) for ``spec.steps`` batches; and the
    description of its training set."""
    x, _, b, weights, desc = training_set(sets, variant)
    net = fit_classifier(x, b, value_range=(-1.0, 1.0), steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr,
                         seed=seed, weights=weights, device=device, progress=progress,
                         desc=f"classifier {variant} seed {seed}")
    return net, desc


def predict(net, x: torch.Tensor, device) -> np.ndarray:
    """B as the classifier reads it: p(B) >= 0.5."""
    return probabilities(net, x, device) >= 0.5


def group_accuracy(pred: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """Accuracy for B in each (A, B) group, the worst group and the mean over groups (groups with images)."""
    groups = {}
    for g in GROUPS:
        m = (a == bool(g[0])) & (b == bool(g[1]))
        groups[f"{g[0]},{g[1]}"] = {"n": int(m.sum()), "accuracy": float((pred[m] == b[m]).mean()) if m.any() else None}
    accs = [v["accuracy"] for v in groups.values() if v["accuracy"] is not None]
    return {"groups": groups, "worst_group": min(accs) if accs else None,
            "mean_group": float(np.mean(accs)) if accs else None, "overall": float((pred == b).mean())}


# ----------------------------------------------------------------------------- statistics
def t_interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` with its t-interval (None for fewer than 2 values)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], np.float64)
    if not len(v):
        return {"mean": None, "ci95": None, "n": 0, "values": []}
    if len(v) < 2:
        return {"mean": float(v.mean()), "ci95": None, "n": 1, "values": v.tolist()}
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": float(v.mean()), "ci95": [float(v.mean()) - half, float(v.mean()) + half], "n": int(len(v)),
            "values": v.tolist()}


def verdict(diff: dict, what: str) -> tuple[str, str]:
    if diff["ci95"] is None:
        return "too few seeds", f"{what}: {diff['n']} paired seed(s); an interval needs at least 2"
    m, (lo, hi) = diff["mean"], diff["ci95"]
    said = f"{what} {m:+.3f}, 95% interval over {diff['n']} seeds [{lo:+.3f}, {hi:+.3f}]"
    if lo > 0:
        return "helps", f"{said}: above 0"
    if hi < 0:
        return "hurts", f"{said}: below 0"
    return "no difference detected", f"{said} holds 0; a gain up to {max(hi, 0):+.3f} is not ruled out"


def summarise(evals: list[dict], spec: EvalSpec) -> dict:
    by = {v: {e["seed"]: e for e in evals if e["variant"] == v} for v in spec.variants}
    variants = {}
    for v, runs in by.items():
        if not runs:
            continue
        seeds = sorted(runs)
        variants[v] = {
            "seeds": seeds, "worst_group": t_interval([runs[s]["test"]["worst_group"] for s in seeds]),
            "mean_group": t_interval([runs[s]["test"]["mean_group"] for s in seeds]),
            "groups": {g: t_interval([runs[s]["test"]["groups"][g]["accuracy"] for s in seeds])
                       for g in runs[seeds[0]]["test"]["groups"]},
            "on_debias_set": {g: t_interval([runs[s]["on_debias_set"]["groups"][g]["accuracy"] for s in seeds])
                              for g in runs[seeds[0]]["on_debias_set"]["groups"]},
            "train": runs[seeds[0]]["train"]}
    compared = {}
    base = by.get("real", {})
    for v, runs in by.items():
        if v == "real" or not runs:
            continue
        common = sorted(set(runs) & set(base))
        entry = {}
        for key in ("worst_group", "mean_group"):
            d = t_interval([runs[s]["test"][key] - base[s]["test"][key] for s in common])
            entry[key] = {**d, "verdict": verdict(d, f"{key.replace('_', '-')} accuracy of {v} minus real")}
        compared[v] = entry
    return {"variants": variants, "compared_with_real": compared}


# ----------------------------------------------------------------------------- the study
def identity(data_cfg, debias_dir: Path, spec: EvalSpec) -> dict:
    csv = (debias_dir / "attributes.csv").read_bytes() if (debias_dir / "attributes.csv").exists() else b""
    return {"data": asdict(data_cfg) | {"num_workers": None}, "debias": str(debias_dir.resolve()),
            "debias_csv_sha256": hashlib.sha256(csv).hexdigest(), "classifier": CLASSIFIER, "steps": spec.steps,
            "batch_size": spec.batch_size, "lr": spec.lr, "test_per_cell": spec.test_per_cell,
            "test_data": spec.test_data, "test_seed": spec.test_seed}


def run_debias_eval(data_cfg, debias_dir: str | Path, out: str | Path, spec: EvalSpec, device=None,
                    progress: bool = False, log: Callable[[str], None] = _log) -> dict[str, Path]:
    """Train and evaluate every (variant, seed) not yet stored in ``OUT/evals``; rewrite the report."""
    from ..utils.device import pick_device

    spec.validate()
    debias_dir, out = Path(debias_dir), Path(out)
    read_debias(debias_dir)
    ident = identity(data_cfg, debias_dir, spec)
    plan = spec.plan()
    stored = {}
    for v, s in plan:
        path = out / "evals" / f"{v}_seed{s}.json"
        if path.exists():
            e = json.loads(path.read_text())
            if e.get("identity") != ident:
                diff = sorted(k for k in ident if e.get("identity", {}).get(k) != ident[k])
                raise UsageError(f"{out} holds evaluations made with other settings ({', '.join(diff)}); use those "
                                 f"settings to continue, or choose another --out")
            stored[(v, s)] = e
    device = pick_device(device if device is None or isinstance(device, str) else str(device))
    sets = load_sets(data_cfg, debias_dir, spec)
    left = [p for p in plan if p not in stored]
    log(f"[debias-eval] {len(plan) - len(left)} of {len(plan)} classifiers stored; {len(left)} to train "
        f"({spec.steps} steps each); balanced test: {sets['test_per_cell']} per cell from {sets['test_source']}")
    for v, s in left:
        t0 = time.time()
        net, desc = train_variant(sets, v, s, spec, device, progress)
        xt, at, bt = sets["test"]
        xd, ad, bd = sets["debias"]
        e = {"variant": v, "seed": s, "identity": ident, "train": desc,
             "test": group_accuracy(predict(net, xt, device), at, bt),
             "on_debias_set": group_accuracy(predict(net, xd, device), ad, bd), "seconds": round(time.time() - t0, 1)}
        write_json(out / "evals" / f"{v}_seed{s}.json", e)
        stored[(v, s)] = e
        log(f"[debias-eval] {v} seed {s}: worst-group {e['test']['worst_group']:.3f}, mean "
            f"{e['test']['mean_group']:.3f} ({e['seconds']:.0f} s)")
    return write_report(out, [stored[p] for p in plan], spec, sets)


def write_report(out: Path, evals: list[dict], spec: EvalSpec, sets: dict) -> dict[str, Path]:
    rep = sets["report"]
    header = {"a": sets["a"], "b": sets["b"], "spec": asdict(spec), "test_per_cell": sets["test_per_cell"],
              "test_source": sets["test_source"],
              "debias_set": {"n": rep["n_written"], "complete": rep["complete"], "phi_judges": rep["phi_judges"],
                             "phi_check_judges": rep.get("phi_check_judges"), "mode": rep["mode"]}}
    return _write(out, header, evals, spec)


HEADER_KEYS = ("a", "b", "spec", "test_per_cell", "test_source", "debias_set")


def rewrite_report(out: str | Path, figure_too: bool = True) -> dict[str, Path]:
    """Rewrite the report of a finished study from what it stored (``debias_eval.json``'s header and ``evals/``),
    with no data or model: a study's record is checked this way (tests/test_debias_record.py)."""
    out = Path(out)
    path = out / "debias_eval.json"
    if not path.exists():
        raise UsageError(f"{out} holds no debias_eval.json; run `patronus debias-eval` into it first")
    stored = json.loads(path.read_text())
    spec = EvalSpec(**stored["spec"])
    plan = spec.plan()
    missing = [f"{v}_seed{s}.json" for v, s in plan if not (out / "evals" / f"{v}_seed{s}.json").exists()]
    if missing:
        raise UsageError(f"{out}/evals lacks {', '.join(missing)}; continue the study with its command")
    evals = [json.loads((out / "evals" / f"{v}_seed{s}.json").read_text()) for v, s in plan]
    return _write(out, {k: stored[k] for k in HEADER_KEYS}, evals, spec, figure_too)


def _write(out: Path, header: dict, evals: list[dict], spec: EvalSpec, figure_too: bool = True) -> dict[str, Path]:
    from ..analysis.tables import write_csv
    from ..utils.io import atomic_path, write_text

    report = {**header, **summarise(evals, spec),
              "classifier": {"trained_by": CLASSIFIER, "network": ARCHITECTURE, "steps": spec.steps,
                             "batch_size": spec.batch_size, "lr": spec.lr},
              "evals": [{k: e[k] for k in ("variant", "seed", "test", "on_debias_set", "seconds")} for e in evals]}
    files = {"debias_eval.json": out / "debias_eval.json", "debias_eval.csv": out / "debias_eval.csv",
             "debias_eval.md": out / "debias_eval.md"}
    if figure_too:
        files["debias_eval.png"] = out / "debias_eval.png"
    write_json(files["debias_eval.json"], report)
    cols = ["variant", "seed", "worst_group", "mean_group", "overall"] + [f"group_{g}" for g in
                                                                         ("1,1", "1,0", "0,1", "0,0")]
    write_csv(files["debias_eval.csv"], cols, ([e["variant"], e["seed"], *[f"{e['test'][k]:.4f}" for k in
                                                                           ("worst_group", "mean_group", "overall")],
                                                *[_cell(e["test"]["groups"][g]["accuracy"]) for g in
                                                  ("1,1", "1,0", "0,1", "0,0")]] for e in evals))
    write_text(files["debias_eval.md"], markdown(report))
    if figure_too:
        import io

        buf = io.BytesIO()
        figure(report).savefig(buf, format="png")
        with atomic_path(files["debias_eval.png"]) as tmp:
            Path(tmp).write_bytes(buf.getvalue())
    return files


def _cell(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _m(d: dict) -> str:
    if d["mean"] is None:
        return "n/a"
    return f"{d['mean']:.3f}" + ("" if d["ci95"] is None else f" [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]")


def markdown(r: dict) -> str:
    a, b = r["a"], r["b"]
    d = r["debias_set"]
    p = d["phi_judges"]
    lines = [f"# Does the debias set help a classifier of {b}?", "",
             f"Classifier of **{b}**, groups by ({a}, {b}); balanced real test set: {r['test_per_cell']} images per "
             f"group from {r['test_source']}. Debias set: {d['n']} images (mode {d['mode']}, "
             f"{'complete' if d['complete'] else 'INCOMPLETE'}), phi by the judges {p['phi']:+.3f}"
             + ("" if not d["phi_check_judges"] else f", by the check judges {d['phi_check_judges']['phi']:+.3f}")
             + f". {r['spec']['steps']} steps per classifier (the network of `patronus train-classifier`); "
               f"intervals: 95 % t over seeds.", "",
             "| variant | training images (real + generated) | phi(A, B) of its training set | worst-group | "
             "mean over groups | " + " | ".join(f"{a}={g[0]},{b}={g[2]}" for g in ("1,1", "1,0", "0,1", "0,0")) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * 4) + " |"]
    for v, x in r["variants"].items():
        t = x["train"]
        lines.append(f"| {v} | {t['n_real']} + {t['n_debias']} ({t['sampling']}) | {t['phi_a_b']:+.2f} | "
                     f"{_m(x['worst_group'])} | {_m(x['mean_group'])} | "
                     + " | ".join(_m(x["groups"][g]) for g in ("1,1", "1,0", "0,1", "0,0")) + " |")
    lines += ["", "## Against the biased real data (paired by seed)", ""]
    for v, c in r["compared_with_real"].items():
        for key in ("worst_group", "mean_group"):
            lines.append(f"- **{v}**, {key.replace('_', '-')}: {c[key]['verdict'][0]}: {c[key]['verdict'][1]}")
    lines += ["", "## Reading it", ""]
    groups = ("1,1", "1,0", "0,1", "0,0")
    if "real" in r["variants"]:
        x = r["variants"]["real"]
        w, m = x["worst_group"]["mean"], x["mean_group"]["mean"]
        lines.append(f"- Headroom: trained on the biased real data, the classifier reaches worst-group {w:.3f} against "
                     f"a mean over groups of {m:.3f}" + (": it shows no shortcut to remove here, so no training set can "
                                                       "raise its worst group much." if w >= 0.98 else
                                                       f"; a gap of {m - w:.3f} that a debiased training set could "
                                                       f"close."))
        on = x["on_debias_set"]
        lines.append(f"- The same classifier reads {b} on the generated images with accuracy "
                     + ", ".join(f"{a}={g[0]},{b}={g[2]}: {_m(on[g])}" for g in groups)
                     + ". Where it is already high in the groups that are rare in training, the generated images of "
                       "those groups do not contradict what it learned, and adding them can change little; where it "
                       "is low, they are the counter-examples the biased data lacks.")
    if "debias" in r["variants"]:
        x = r["variants"]["debias"]
        lines.append(f"- Trained on the generated images alone, the classifier reaches mean accuracy "
                     f"{_m(x['mean_group'])} and worst-group {_m(x['worst_group'])} on real test images: how much of "
                     f"{b} as real images show it the generated set teaches (low: the generated images show {b} "
                     f"otherwise than real ones do).")
    if "real+debias" in r["variants"] and "real" in r["variants"]:
        t = r["variants"]["real+debias"]["train"]
        lines.append(f"- The generated images are {t['n_debias'] / max(t['n'], 1):.0%} of real+debias's training set; "
                     f"they lower phi(A, B) of the training set from {r['variants']['real']['train']['phi_a_b']:+.2f} "
                     f"to {t['phi_a_b']:+.2f} (by the real labels and the judges' reads).")
    if "real-balanced" in r["variants"]:
        lines.append(f"- real-balanced resamples the real images so that every group is equally likely, with no "
                     f"generated image: a gain of real+debias that real-balanced matches needs no generator.")
    return "\n".join(lines) + "\n"


def figure(r: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    names = list(r["variants"])
    for k, key in enumerate(("worst_group", "mean_group")):
        for i, v in enumerate(names):
            d = r["variants"][v][key]
            xpos = i + (k - 0.5) * 0.3
            ax1.scatter([xpos] * len(d["values"]), d["values"], s=12, color=f"C{k}", alpha=0.6)
            if d["ci95"] is not None:
                ax1.errorbar([xpos], [d["mean"]], yerr=[[d["mean"] - d["ci95"][0]], [d["ci95"][1] - d["mean"]]],
                             fmt="o", color=f"C{k}", capsize=4, label=key.replace("_", "-") if i == 0 else None)
            else:
                ax1.plot([xpos], [d["mean"]], "o", color=f"C{k}", label=key.replace("_", "-") if i == 0 else None)
    ax1.set_xticks(range(len(names)), names, fontsize=8)
    ax1.set_ylabel(f"accuracy for {r['b']} (balanced real test)")
    ax1.set_ylim(0, 1.02)
    ax1.legend(fontsize=8)
    ax1.set_title("worst-group and mean accuracy; points: seeds, bars: 95% t-interval", fontsize=9)
    groups = ("1,1", "1,0", "0,1", "0,0")
    width = 0.8 / max(len(names), 1)
    for i, v in enumerate(names):
        means = [r["variants"][v]["groups"][g]["mean"] or 0 for g in groups]
        ax2.bar(np.arange(4) + (i - (len(names) - 1) / 2) * width, means, width, label=v)
    ax2.set_xticks(range(4), [f"{r['a']}={g[0]}\n{r['b']}={g[2]}" for g in groups], fontsize=8)
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=7)
    ax2.set_title("accuracy per group (mean over seeds)", fontsize=9)
    fig.tight_layout()
    return fig
