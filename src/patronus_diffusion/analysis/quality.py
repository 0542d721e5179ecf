"""Prototype quality: how well s describes the data's labels, and which prototypes are redundant or dead.

Everything works on S, the (N, P) matrix of prototype similarities of N images (spec §6.8).

* **Linear-probe ROC-AUC** (binary attributes) and **linear-probe accuracy** (class labels): a
  StandardScaler + LogisticRegression per target, 5-fold cross-validation (KFold, shuffled, seeded),
  the scaler fitted on the train fold only; mean and std over folds. (The reference calls both "AUROC".)
* **Single-prototype AUROC** A_ij = AUC(y_i, s_j) for every binary target i (class labels one-vs-rest)
  and prototype j; AUC is the Mann-Whitney probability P(s_j(pos) > s_j(neg)) with ties counting 1/2.
* **TAD** (NashAE / InfoDiffusion), on the train fold of each fold: with Â_ij = max(A_ij, 1 - A_ij),
  gap_i = Â_i(1) - Â_i(2) (best minus second-best prototype); MI(i, k) between binary targets in nats
  (H_i = MI(i, i)); ent_red_i = max_{k != i} MI(i, k) / H_i. Target i is **captured** iff
  Â_i(1) >= 0.75 and ent_red_i <= 0.2; TAD = sum of gap_i over captured targets.
* **Redundancy**: prototype pairs whose vectors have cosine similarity above a threshold, and pairs
  whose s are Pearson-correlated above a threshold over the data.
* **Dead prototypes**: never the best match (argmax_j of the z-scored s_j) of any image, or near-constant s
  (std below ``rel_std`` times the median std of all prototypes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from ..utils.errors import UsageError
from .results import ShowsFigure, one_line

CAPTURE_AUROC = 0.75
CAPTURE_ENT_RED = 0.2


# ----------------------------------------------------------------------------- targets
@dataclass
class Target:
    """One label to predict from s: ``binary`` (0/1, scored by ROC-AUC) or ``class`` (scored by accuracy)."""

    name: str
    kind: str
    y: np.ndarray  # (N,) ints; -1 = unknown

    @property
    def known(self) -> np.ndarray:
        return self.y >= 0


def targets_from_dataset(labels: np.ndarray, class_names, attributes: np.ndarray, attribute_names) -> list[Target]:
    """Class labels (if any) and every attribute column with 2 values (binary) or a few integer values (class).

    Binary columns may be 0/1 or -1/1 (the larger value is positive); non-integer columns are skipped.
    """
    out = []
    labels = np.asarray(labels)
    if len(labels) and (labels >= 0).any() and len(np.unique(labels[labels >= 0])) > 1:
        out.append(Target("class", "class", labels.astype(np.int64)))
    for k, name in enumerate(attribute_names):
        col = np.asarray(attributes[:, k], np.float64)
        ok = np.isfinite(col)
        levels = np.unique(col[ok])
        if len(levels) == 2:
            y = np.where(ok, (col == levels.max()).astype(np.int64), -1)
            out.append(Target(name, "binary", y))
        elif 2 < len(levels) <= 100 and np.all(levels == np.round(levels)):
            lookup = {v: i for i, v in enumerate(levels)}
            y = np.array([lookup[v] if o else -1 for v, o in zip(col, ok)], np.int64)
            out.append(Target(name, "class", y))
    return out


def one_vs_rest(targets: list[Target], class_names=()) -> list[Target]:
    """Binary targets: binary ones as they are, class targets expanded to ``name=c`` indicators."""
    out = []
    for t in targets:
        if t.kind == "binary":
            out.append(t)
            continue
        for c in np.unique(t.y[t.known]):
            label = class_names[c] if t.name == "class" and c < len(class_names) else str(int(c))
            out.append(Target(f"{t.name}={label}", "binary", np.where(t.known, (t.y == c).astype(np.int64), -1)))
    return out


# ----------------------------------------------------------------------------- AUROC
def auroc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of ``scores`` (N,) or (N, P) for binary y (N,): P(score_pos > score_neg) + P(tie)/2.

    Mann-Whitney form: AUC = (sum of the positives' ranks - n1 (n1 + 1) / 2) / (n1 n0), average ranks for
    ties. NaN when y has a single class.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, np.float64)
    one = s.ndim == 1
    s = s[:, None] if one else s
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        out = np.full(s.shape[1], np.nan)
    else:
        ranks = rankdata(s, axis=0)
        out = (ranks[y].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out[0] if one else out


def prototype_auroc_matrix(S: np.ndarray, targets: list[Target]) -> np.ndarray:
    """(T, P) single-prototype AUROC A_ij = AUC(y_i, s_j) over the items where y_i is known (signed: < 0.5
    means the prototype is *less* similar when the attribute is present)."""
    return np.stack([auroc(t.y[t.known], S[t.known]) for t in targets]) if targets else np.zeros((0, S.shape[1]))


# ----------------------------------------------------------------------------- probes
def _kfold(n: int, folds: int, seed: int):
    from sklearn.model_selection import KFold

    if n < folds:
        raise UsageError(f"{n} labelled items cannot be split into {folds} folds; encode more images (--limit)")
    return KFold(folds, shuffle=True, random_state=seed).split(np.arange(n))


def linear_probe_scores(S: np.ndarray, target: Target, folds: int = 5, seed: int = 0) -> list[float]:
    """Per-fold test score of a standardised logistic-regression probe: ROC-AUC (binary) or accuracy (class)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    X, y = S[target.known], target.y[target.known]
    scores = []
    for tr, te in _kfold(len(y), folds, seed):
        if len(np.unique(y[tr])) < 2:
            scores.append(float("nan"))
            continue
        scaler = StandardScaler().fit(X[tr])
        clf = LogisticRegression(max_iter=1000).fit(scaler.transform(X[tr]), y[tr])
        Xte = scaler.transform(X[te])
        if target.kind == "binary":
            scores.append(float(roc_auc_score(y[te], clf.predict_proba(Xte)[:, 1]))
                          if len(np.unique(y[te])) == 2 else float("nan"))
        else:
            scores.append(float((clf.predict(Xte) == y[te]).mean()))
    return scores


# ----------------------------------------------------------------------------- TAD
def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """MI of two binary vectors in nats: sum over the 4 cells of p(a,b) log(p(a,b) / (p(a) p(b)))."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    mi = 0.0
    for va in (False, True):
        for vb in (False, True):
            pab = np.mean((a == va) & (b == vb))
            pa, pb = np.mean(a == va), np.mean(b == vb)
            if pab > 0:
                mi += pab * math.log(pab / (pa * pb))
    return mi


@dataclass
class TADResult:
    tad: float
    captured: list[str]
    best_prototype: dict[str, int]
    gap: dict[str, float]
    best_auroc: dict[str, float]
    ent_red: dict[str, float]


def tad(auroc_matrix: np.ndarray, Y: np.ndarray, names: list[str], min_auroc: float = CAPTURE_AUROC,
        max_ent_red: float = CAPTURE_ENT_RED) -> TADResult:
    """TAD and the captured targets from a (T, P) AUROC matrix and the (N, T) binary targets Y (spec §6.8)."""
    A = np.maximum(auroc_matrix, 1 - auroc_matrix)
    T = A.shape[0]
    Yb = np.asarray(Y, bool)
    H = np.array([mutual_information(Yb[:, i], Yb[:, i]) for i in range(T)])
    result = TADResult(0.0, [], {}, {}, {}, {})
    for i, name in enumerate(names):
        row = np.nan_to_num(A[i], nan=0.5)
        order = np.argsort(-row)
        best = float(row[order[0]])
        gap = best - float(row[order[1]]) if len(row) > 1 else best
        others = [mutual_information(Yb[:, i], Yb[:, k]) for k in range(T) if k != i]
        ent_red = (max(others) / H[i]) if others and H[i] > 0 else (0.0 if H[i] > 0 else float("inf"))
        result.best_prototype[name], result.gap[name] = int(order[0]), gap
        result.best_auroc[name], result.ent_red[name] = best, float(ent_red)
        if best >= min_auroc and ent_red <= max_ent_red:
            result.captured.append(name)
            result.tad += gap
    return result


def tad_cross_validated(S: np.ndarray, targets: list[Target], folds: int = 5, seed: int = 0) -> list[TADResult]:
    """TAD on the train part of each fold (as the reference), over items where every binary target is known."""
    if not targets:
        return []
    known = np.all([t.known for t in targets], axis=0)
    X, Y = S[known], np.stack([t.y[known] for t in targets], 1)
    names = [t.name for t in targets]
    out = []
    for tr, _ in _kfold(len(X), folds, seed):
        tr_targets = [Target(n, "binary", Y[tr, i]) for i, n in enumerate(names)]
        out.append(tad(prototype_auroc_matrix(X[tr], tr_targets), Y[tr], names))
    return out


# ----------------------------------------------------------------------------- redundancy, dead
def redundant_pairs(matrix: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, value) for i < j with matrix[i, j] > threshold, strongest first."""
    iu = np.triu_indices(matrix.shape[0], 1)
    vals = matrix[iu]
    keep = vals > threshold
    pairs = [(int(i), int(j), float(v)) for i, j, v in zip(iu[0][keep], iu[1][keep], vals[keep])]
    return sorted(pairs, key=lambda p: -p[2])


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v @ v.T


def correlation_matrix(S: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of S; constant columns correlate 0 with everything."""
    Z = S - S.mean(0)
    sd = Z.std(0)
    Z = np.where(sd > 0, Z / np.where(sd > 0, sd, 1), 0.0)
    C = Z.T @ Z / len(S)
    np.fill_diagonal(C, 1.0)
    return C


def dead_prototypes(S: np.ndarray, rel_std: float = 0.05) -> dict[str, list[int]]:
    """never_best: prototypes that are the best match of no image; near_constant: std(s_j) < rel_std x median std.

    The best match of an image is argmax_j z_j with z_j = (s_j - mean s_j) / std s_j over the data: the
    prototype that is *unusually* similar to it (raw s scales differ between prototypes, so a raw argmax
    would crown the same prototype for every image). Near-constant prototypes never win.
    """
    P = S.shape[1]
    sd = S.std(0)
    med = float(np.median(sd))
    flat_mask = sd <= rel_std * med
    z = np.where(flat_mask, -np.inf, (S - S.mean(0)) / np.where(flat_mask, 1.0, sd))
    wins = np.bincount(z.argmax(1), minlength=P) if not flat_mask.all() else np.zeros(P, int)
    never = [int(j) for j in range(P) if wins[j] == 0]
    flat = [int(j) for j in range(P) if flat_mask[j]]
    return {"never_best": never, "near_constant": flat, "dead": sorted(set(never) | set(flat)),
            "best_match_counts": wins.tolist()}


# ----------------------------------------------------------------------------- encoding + report
@dataclass
class Encoded:
    S: np.ndarray
    labels: np.ndarray
    class_names: tuple
    attributes: np.ndarray
    attribute_names: tuple
    sources: list = field(default_factory=list)


def encode_dataset(pat, ds, limit: int | None = 10000, batch: int = 256, progress: bool = True) -> Encoded:
    """s of the first ``limit`` items of a dataset in file order (the reference uses the first 10,000)."""
    n = len(ds) if not limit else min(limit, len(ds))
    s = pat.encode_dataset(ds, range(n), chunk=batch, progress=progress).s
    return Encoded(s.numpy().astype(np.float64), np.asarray(ds.labels[:n]), tuple(ds.class_names),
                   np.asarray(ds.attributes[:n]), tuple(ds.attribute_names), list(ds.sources[:n]))


def _mean_std(values) -> dict:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": float(v.std()) if len(v) else float("nan"),
            "folds": [float(x) for x in values]}


@dataclass(repr=False)
class QualityResult(ShowsFigure):
    """Every quality number of §6.8 (``report``, JSON-able: what quality.json holds) and the (targets x
    prototypes) single-prototype AUROC matrix (``matrix``, rows named by ``report["tad_targets"]``)."""

    report: dict
    matrix: np.ndarray

    def __repr__(self) -> str:
        r = self.report
        probes = ", ".join(f"{n} {p['mean']:.2f}" for n, p in list(r["probes"].items())[:3])
        tad = "" if not r["tad"] else f"; TAD {r['tad']['mean']:.2f}"
        return one_line(f"QualityResult({r['n_images']} images x {r['prototypes']} prototypes: probes {probes or '-'}"
                        f"{tad}; {len(r['dead']['dead'])} dead, "
                        f"{len(r['redundancy']['s_correlated_pairs'])} correlated pairs)")

    def to_json(self) -> dict:
        return self.report

    def summary(self) -> str:
        """The headline numbers as a Markdown table (quality.md)."""
        return summary_table(self.report)

    def figure(self):
        """prototype_auroc.png: the heat map of the single-prototype AUROC."""
        return auroc_figure(self.matrix, self.report["tad_targets"])

    def to_pil(self):
        from .figures import figure_image

        return figure_image(self.figure(), dpi=100)

    def write(self, out: str | Path) -> dict[str, Path]:
        """quality.json, quality.md, probes.csv, prototype_auroc.csv + .png, redundancy.csv into ``out``."""
        from ..utils.io import write_json, write_text
        from .figures import save_figure

        out, report, matrix = Path(out), self.report, self.matrix
        files = {"quality.json": out / "quality.json", "quality.md": out / "quality.md",
                 "probes.csv": out / "probes.csv", "prototype_auroc.csv": out / "prototype_auroc.csv",
                 "prototype_auroc.png": out / "prototype_auroc.png", "redundancy.csv": out / "redundancy.csv"}
        write_json(files["quality.json"], report)
        write_text(files["quality.md"], summary_table(report))
        folds = ",".join(f"fold{i}" for i in range(report["folds"]))
        write_text(files["probes.csv"], f"target,metric,n,mean,std,{folds}\n" + "".join(
            f"{n},{p['metric']},{p['n']},{p['mean']:.6f},{p['std']:.6f}," + ",".join(f"{v:.6f}" for v in p["folds"])
            + "\n" for n, p in report["probes"].items()))
        header = "target," + ",".join(f"p{j}" for j in range(matrix.shape[1]))
        write_text(files["prototype_auroc.csv"], header + "\n" + "".join(
            f"{n}," + ",".join(f"{v:.4f}" for v in row) + "\n" for n, row in zip(report["tad_targets"], matrix)))
        r = report["redundancy"]
        write_text(files["redundancy.csv"], "kind,i,j,value\n" + "".join(
            f"{kind},{i},{j},{v:.4f}\n"
            for kind, key in (("cosine", "cosine_pairs"), ("s_correlation", "s_correlated_pairs"))
            for i, j, v in r[key]))
        save_figure(self.figure(), files["prototype_auroc.png"], dpi=100)
        return files


def quality_report(enc: Encoded, prototype_vectors: np.ndarray, folds: int = 5, seed: int = 0,
                   cos_threshold: float = 0.9, corr_threshold: float = 0.9, rel_std: float = 0.05,
                   progress: bool = True) -> QualityResult:
    """Every quality number of §6.8 with the AUROC matrix (:class:`QualityResult`)."""
    targets = targets_from_dataset(enc.labels, enc.class_names, enc.attributes, enc.attribute_names)
    probes = {}
    for t in tqdm(targets, desc="probes", disable=not progress, leave=False):
        metric = "linear_probe_roc_auc" if t.kind == "binary" else "linear_probe_accuracy"
        scores = linear_probe_scores(enc.S, t, folds, seed)
        probes[t.name] = {"metric": metric, "n": int(t.known.sum()), **_mean_std(scores)}
    binary = one_vs_rest(targets, enc.class_names)
    matrix = prototype_auroc_matrix(enc.S, binary)
    tads = tad_cross_validated(enc.S, binary, folds, seed) if binary else []
    cos = cosine_matrix(prototype_vectors)
    corr = correlation_matrix(enc.S)
    report = {
        "n_images": int(len(enc.S)), "prototypes": int(enc.S.shape[1]), "folds": folds, "seed": seed,
        "probes": probes,
        "tad": _mean_std([r.tad for r in tads]) if tads else None,
        "attributes_captured": _mean_std([len(r.captured) for r in tads]) if tads else None,
        "captured_fold0": {n: tads[0].best_prototype[n] for n in tads[0].captured} if tads else {},
        "tad_targets": [t.name for t in binary],
        "best_prototype": {t.name: {"prototype": int(np.nanargmax(np.maximum(row, 1 - row))),
                                    "auroc": float(row[int(np.nanargmax(np.maximum(row, 1 - row)))])}
                           for t, row in zip(binary, matrix)},
        "redundancy": {"cosine_threshold": cos_threshold, "cosine_pairs": redundant_pairs(cos, cos_threshold),
                       "s_correlation_threshold": corr_threshold,
                       "s_correlated_pairs": redundant_pairs(corr, corr_threshold)},
        "dead": {**dead_prototypes(enc.S, rel_std), "rel_std": rel_std},
        "s_std": enc.S.std(0).tolist(),
    }
    return QualityResult(report, matrix)


def summary_table(report: dict) -> str:
    """A Markdown table of the headline numbers."""
    lines = ["| measure | value |", "| --- | --- |"]
    for name, p in report["probes"].items():
        lines.append(f"| {p['metric'].replace('_', ' ')} ({name}) | {p['mean']:.3f} ± {p['std']:.3f} |")
    if report["tad"]:
        lines.append(f"| TAD ({len(report['tad_targets'])} binary targets) | {report['tad']['mean']:.3f} ± "
                     f"{report['tad']['std']:.3f} |")
        lines.append(f"| attributes captured | {report['attributes_captured']['mean']:.1f} ± "
                     f"{report['attributes_captured']['std']:.1f} |")
    r = report["redundancy"]
    lines.append(f"| redundant pairs, cosine(p_i, p_j) > {r['cosine_threshold']} | {len(r['cosine_pairs'])} |")
    lines.append(f"| redundant pairs, corr(s_i, s_j) > {r['s_correlation_threshold']} | "
                 f"{len(r['s_correlated_pairs'])} |")
    d = report["dead"]
    lines.append(f"| never the best match | {len(d['never_best'])} of {report['prototypes']} |")
    lines.append(f"| near-constant s | {len(d['near_constant'])} |")
    if report.get("s_use") and np.isfinite(report["s_use"].get("gain", float("nan"))):
        u = report["s_use"]
        lines.append(f"| decoder's use of s: held-out loss lower with the image's own s than with another's "
                     f"(n={u['n']}) | {100 * u['gain']:.1f} % |")
    return "\n".join(lines) + "\n"


def auroc_figure(matrix: np.ndarray, names: list[str]):
    """Heat map of the target x prototype single-prototype AUROC (0.5 = uninformative, white)."""
    from .figures import new_figure  # the object API: the process's matplotlib backend stays as it is

    T, P = matrix.shape
    fig = new_figure(figsize=(max(4.0, 0.28 * P + 2.5), max(2.0, 0.32 * T + 1.2)), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(P), [str(j) for j in range(P)], fontsize=7)
    ax.set_yticks(range(T), names, fontsize=8)
    ax.set_xlabel("prototype j")
    ax.set_title("single-prototype AUROC(y, s_j)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def decoder_use_of_s(pat, ds, n: int = 512, seed: int = 0) -> dict:
    """The decoder's use of s on the first ``n`` images (evaluation.heldout.conditioning_gain)."""
    from ..evaluation.heldout import conditioning_gain

    n = min(n, len(ds))
    if n < 2:
        return {"n": n, "gain": float("nan")}
    return conditioning_gain(pat.model, ds.get_batch(list(range(n))), pat.schedule, seed=seed)


def prototype_vectors(pat) -> np.ndarray:
    return pat.model.prototypes.prototypes.detach().cpu().numpy()


def run_quality(pat, split: str = "train", limit: int | None = 10000, folds: int = 5, seed: int = 0,
                cos_threshold: float = 0.9, corr_threshold: float = 0.9, dataset=None,
                progress: bool = True) -> QualityResult:
    """Encode ``split`` of the run's dataset (or ``dataset``) and compute the quality report (``write(out)``
    writes its files)."""
    torch.manual_seed(seed)
    ds = dataset if dataset is not None else pat.dataset(split)
    enc = encode_dataset(pat, ds, limit, progress=progress)
    res = quality_report(enc, prototype_vectors(pat), folds, seed, cos_threshold, corr_threshold, progress=progress)
    res.report["split"] = split
    res.report["s_use"] = decoder_use_of_s(pat, ds, n=min(512, limit or 512), seed=seed)
    return res
