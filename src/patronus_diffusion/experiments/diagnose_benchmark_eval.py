"""One model of the detector benchmark, evaluated: both namings, the scan, and the outside judge.

Used by :mod:`.diagnose_benchmark`; every stage of a model is stored under ``WORK/`` as it finishes (atomic), so
an interrupted model resumes at its next stage.

* **Naming**: :func:`~..analysis.shortcut.diagnose` of (A, mark) and of (not:A, mark), the analysis API's public
  entry point, with the study's settings.
* **Scan**: every pair of the set's attributes ranked through :func:`scan_ranking`, the one place that names a
  scan's entry point: ``pairwise`` (:func:`~..analysis.scan.scan_pairs`, one diagnosis per pair, the default)
  or ``shared`` (``analysis/scan.py``'s shared scan, about one edit pass per attribute, where installed).
* **Outside judge**: a small CNN per attribute (:class:`~..evaluation.judge.JudgeNet`: another architecture than
  the diagnosis' probe and the prototype encoder, its own seed), trained on the clean set's *real* train images
  only and never on generated ones. Its **steerability** (CB-AE's protocol): among clean test images without the
  mark, the share it reads as marked after the mark's top prototypes (by AUROC on clean train images) are raised
  to their plausible maximum, decoded from the image's inverted x_T; beside it the share it reads as marked on
  the unedited reconstructions, and the change of its A reading on the edited images without A (the leak into A
  as the judge sees it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.io import write_json

JUDGE_SEED = 12345  # the package's judge seed: deliberately no training seed of a model it judges


# ----------------------------------------------------------------------------- the scan, behind one adapter
SCANS = ("pairwise", "shared")


def shared_scan():
    """The shared scan's entry point (analysis/scan.py, issue 37 part 4), or None where this installation lacks it."""
    try:
        from ..analysis.scan import scan_shared
    except ImportError:
        return None
    return scan_shared


def scan_ranking(pat, names: list[str], probe_cfg, mode: str = "pairwise", **settings) -> list[dict]:
    """Every pair of ``names`` with its signed score, interval and verdict, strongest coupling first: the one
    function that calls a scan. ``pairwise``: :func:`~..analysis.scan.scan_pairs` (one full diagnosis per
    pair); ``shared``: the shared scan (about one edit pass per attribute). Rows carry a, b, score (None or NaN
    when unmeasured), ci95 and verdict; the benchmark reads nothing else of a scan."""
    if mode == "shared":
        scan = shared_scan()
        if scan is None:
            from ..utils.errors import UsageError

            raise UsageError("--scan shared needs analysis/scan.py (issue 37 part 4), which this installation "
                             "lacks; use --scan pairwise")
        rows = scan(pat, names, probe_cfg, progress=False, **settings).pairs
    else:
        from ..analysis.scan import scan_pairs

        rows = scan_pairs(pat, names, probe_cfg, progress=False, **settings).pairs
    return [{"a": r["a"], "b": r["b"], "score": r["score"], "ci95": list(r["ci95"]), "verdict": r["verdict"],
             "deciding_direction": r.get("deciding_direction"), "tested_directions": r.get("tested_directions", []),
             "reason": r.get("reason", ""), "training_labels": r.get("training_labels"),
             "verdict_before_label_check": r.get("verdict_before_label_check")} for r in rows]


def naming_summary(report: dict) -> dict:
    """What the benchmark keeps of one diagnosis report (no per-image arrays)."""
    dirs = {k: {f: d.get(f) for f in ("edited", "other", "own_effect", "leak", "leak_ci95", "null_leak", "null_ci95",
                                      "probe_crosstalk", "score", "ci95", "tested", "verdict", "untested_because")}
            for k, d in report["directions"].items()}
    return {"a": report["a"], "b": report["b"], "score": report["score"], "ci95": list(report["ci95"]),
            "verdict": report["verdict"], "reason": report["reason"],
            "training_labels": report.get("training_labels"),
            "verdict_before_label_check": report.get("verdict_before_label_check"),
            "deciding_direction": report["deciding_direction"], "tested_directions": report["tested_directions"],
            "seed_scores": report["seed_scores"], "probe_test_auroc_min": report["probe_test_auroc_min"],
            "edited_prototypes": {"a": report["prototypes"]["edited_a"], "b": report["prototypes"]["edited_b"]},
            "null_prototypes": report["null_edit"]["prototypes"], "directions": dirs}


# ----------------------------------------------------------------------------- the outside judge
@dataclass
class AttributeJudge:
    net: torch.nn.Module
    meta: dict

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """True where the judge reads the attribute (images in [-1, 1])."""
        self.net.eval()
        out = [self.net(images[i:i + batch].float()).argmax(1) for i in range(0, len(images), batch)]
        return torch.cat(out).numpy().astype(bool) if out else np.zeros(0, bool)


def attribute_judge(path: Path, attr: str, train: tuple[torch.Tensor, np.ndarray],
                    test: tuple[torch.Tensor, np.ndarray], epochs: float, batch: int = 128) -> AttributeJudge:
    """The judge of one attribute stored at ``path`` (.safetensors + .json), trained there when absent: a binary
    JudgeNet on the clean set's real train images (seed 12345, Adam, one-cycle LR to 1e-3), its accuracy and
    AUROC on the clean test images in its metadata."""
    from ..analysis.quality import auroc
    from ..evaluation.judge import JudgeNet
    from ..runs import load_into, load_weights, save_weights

    x, y = train
    key = {"attribute": attr, "epochs": epochs, "batch": batch, "seed": JUDGE_SEED, "n_train": int(len(y)),
           "channels": int(x.shape[1]), "size": int(x.shape[-1])}
    meta_path = path.with_suffix(".json")
    net = JudgeNet(x.shape[1], 2)
    if meta_path.exists() and path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            load_into(net, load_weights(path), path)
            return AttributeJudge(net.eval(), meta)
    torch.manual_seed(JUDGE_SEED)
    net = JudgeNet(x.shape[1], 2)
    g = torch.Generator().manual_seed(JUDGE_SEED)
    steps = max(1, int(epochs * max(1, len(y) // batch)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    target = torch.as_tensor(np.asarray(y, np.int64))
    t0 = time.time()
    net.train()
    perm = torch.zeros(0, dtype=torch.long)
    for _ in range(steps):
        if perm.numel() < min(batch, len(y)):
            perm = torch.cat([perm, torch.randperm(len(y), generator=g)])
        idx, perm = perm[:batch], perm[batch:]
        loss = F.cross_entropy(net(x[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    tx, ty = test
    with torch.no_grad():
        logits = torch.cat([net(tx[i:i + 256]) for i in range(0, len(tx), 256)])
    p = torch.softmax(logits, 1)[:, 1].numpy()
    meta = {"key": key, "attribute": attr, "test_accuracy": round(float(((p > 0.5) == np.asarray(ty, bool)).mean()), 4),
            "test_auroc": round(float(auroc(np.asarray(ty, bool), p)), 4), "n_test": int(len(ty)),
            "seconds": round(time.time() - t0, 1),
            "trained_on": "real images of the clean set's train split only (never generated images)"}
    save_weights(path, net.state_dict())
    write_json(meta_path, meta)  # written last: its presence with the same key marks a whole judge
    return AttributeJudge(net, meta)


def _share(k: int, n: int) -> dict:
    from .diagnose_benchmark_report import wilson

    lo, hi = wilson(k, n)
    return {"k": int(k), "n": int(n), "share": k / n if n else float("nan"), "ci95": [lo, hi]}


def steerability(pat, clean_test: tuple[torch.Tensor, np.ndarray], s_train: np.ndarray, mark_train: np.ndarray,
                 judges: dict[str, AttributeJudge], *, n: int, top_k: int, steps: int, edit_guidance: float,
                 seed: int) -> dict:
    """The outside judge's steerability of the mark on this model (module docstring). ``clean_test`` = (images,
    labels (N, 2): A, mark) of the clean test split; ``s_train``/``mark_train`` the clean train images' s and
    mark labels (ranking and plausible maxima); ``judges`` {"mark": ..., "a": ...}."""
    from ..analysis.shortcut import rank_prototypes
    from ..edit import Edit, EditPlan, run_plan

    x, y = clean_test
    rng = np.random.default_rng(seed)
    pools = [np.flatnonzero((y[:, 1] == 0) & (y[:, 0] == v)) for v in (0, 1)]  # no mark; half without A
    take = [min(len(p), n // 2) for p in pools]
    pick = np.sort(np.concatenate([rng.choice(p, t, replace=False) for p, t in zip(pools, take) if t]))
    if len(pick) < 2:
        return {"n": int(len(pick)), "skipped": "fewer than 2 clean test images without the mark"}
    protos = [j for j, _ in rank_prototypes(s_train, mark_train)[:top_k]]
    values = s_train.max(0)
    plan = EditPlan(images=x[pick], steps=steps, reconstruction=True,
                    edits=[Edit.set_all({j: float(values[j]) for j in protos}, "raise mark")],
                    edit_guidance=float(edit_guidance))
    res = run_plan(pat, plan)
    edited, rec = res.images[0], res.reconstruction
    m_edit, m_rec, m_orig = (judges["mark"].read(v) for v in (edited, rec, x[pick]))
    unmarked = ~m_rec  # CB-AE: among the images the judge reads as lacking the mark before the intervention
    without_a = y[pick, 0] == 0
    a_edit, a_rec = judges["a"].read(edited), judges["a"].read(rec)
    d = (a_edit.astype(float) - a_rec.astype(float))[without_a]
    boot = np.random.default_rng(seed + 1).integers(0, len(d), (2000, len(d))) if len(d) else None
    leak_ci = ([float(v) for v in np.quantile(d[boot].mean(1), [0.025, 0.975])] if boot is not None
               else [float("nan")] * 2)
    return {"n": int(len(pick)), "prototypes": protos, "edit_values": {str(j): float(values[j]) for j in protos},
            "steered": _share(int(m_edit[unmarked].sum()), int(unmarked.sum())),
            "marked_edit_all": _share(int(m_edit.sum()), len(pick)),
            "marked_reconstruction": _share(int(m_rec.sum()), len(pick)),
            "marked_original": _share(int(m_orig.sum()), len(pick)),
            "a_leak": {"n": int(without_a.sum()), "value": float(d.mean()) if len(d) else float("nan"),
                       "ci95": leak_ci, "read_a_edited": int(a_edit[without_a].sum()),
                       "read_a_reconstruction": int(a_rec[without_a].sum())},
            "judge_test_accuracy": {k: j.meta["test_accuracy"] for k, j in judges.items()},
            "judge_test_auroc": {k: j.meta["test_auroc"] for k, j in judges.items()},
            "edit_guidance": float(edit_guidance), "steps": steps}


# ----------------------------------------------------------------------------- one model
def _stage(work: Path, name: str, fn: Callable[[], dict], log: Callable[[str], None]) -> dict:
    """The stored result of one stage, or run it and store it (atomic) with its wall-clock seconds."""
    path = work / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.time()
    out = fn()
    out["seconds"] = round(time.time() - t0, 1)
    write_json(path, out)
    log(f"[benchmark]   {name}: {out['seconds']:.0f} s")
    return out


def evaluate_model(pat, *, a_name: str, names: list[str], probe_cfg, judges: dict[str, AttributeJudge],
                   diagnose_settings: dict, steer_n: int, seed: int, work: Path, log: Callable[[str], None],
                   scan: str = "pairwise") -> dict:
    """Both namings, the scan and the judge's steerability of one trained model (stages stored under ``work``)."""
    from ..analysis.shortcut import clean_data, diagnose

    kw = dict(diagnose_settings)
    stages = {}
    for key, a in (("a_b", a_name), ("nota_b", f"not:{a_name}")):
        stages[key] = _stage(work, f"diagnose_{key}", lambda a=a: naming_summary(
            diagnose(pat, a, "mark", probe_cfg, seed=seed, progress=False, **kw).report), log)
    stages["scan"] = _stage(work, "scan", lambda: {"names": names, "mode": scan, "rows": scan_ranking(
        pat, names, probe_cfg, scan, seed=seed, **kw)}, log)

    def judge_stage() -> dict:
        data = clean_data(pat, a_name, "mark", probe_cfg, kw.get("probe_limit", 4000), seed)
        s_train = pat.encode(data.train_x).s.numpy().astype(np.float64)
        return steerability(pat, (data.test_x, data.test_y), s_train, data.train_y[:, 1], judges, n=steer_n,
                            top_k=kw.get("top_k", 2), steps=kw.get("steps", 25),
                            edit_guidance=kw.get("edit_guidance", 0.0), seed=seed)

    stages["judge"] = _stage(work, "judge", judge_stage, log)
    return stages
