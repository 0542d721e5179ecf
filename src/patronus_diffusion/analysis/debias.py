"""Debias: generate a data set in which attributes A and B are independent, as outside judges read them.

``debias(pat, "mark", "footwear", n=400)`` (``patronus debias --decouple A,B``) fills the four (A, B) cells with
n/4 generated images each:

1. **Rank** A's prototypes on up to ``rank_limit`` training images of the run. ``ranking="within"`` (the
   default): score_A = AUROC(A, s_j) averaged within B = 1 and within B = 0, score_B = AUROC(B, s_j) averaged
   within A = 1 and A = 0; a prototype qualifies when it reads A more than B (score_A - 0.5 > |score_B - 0.5|),
   so that on a biased run a prototype of B that merely co-occurs with A is never edited; the ``top_k``
   qualifying ones with the highest score_A are A's prototypes. Where a stratum holds only one value of A (a run
   trained at phi = +-1) it falls back to the plain AUROC, with a warning; ``ranking="plain"`` is the plain AUROC
   as ``patronus audit`` ranks. The edit targets are the plausible maximum (A present) and minimum (A absent):
   the maximum and minimum of s_j over the ranking images.
2. **Generate** each attempt for cell (a, b): a real training image with B = b (any A; drawn from a seeded
   permutation of them), its s with A's prototypes set to the target of a, decoded with the run's sampler either
   from fresh seeded noise (``mode="sample"``) or from the image's own DDIM inversion (``mode="inversion"``).
   Images are rounded to 8 bits before they are judged, so what is judged is what is written.
3. **Accept** an attempt only when both outside judges read it as the target cell with confidence: the judge of
   A gives p(A) >= ``confidence`` for a = 1 (<= 1 - confidence for a = 0), and the same for B. The judges are
   those of ``patronus audit`` (:mod:`.audit_models`): the project's class judge for ``class:`` attributes, else a
   small CNN trained on the run's real training images only (cached); each must read its attribute on the run's
   test split with AUROC >= ``min_judge_auroc``, or nothing runs.
4. **Stop** a cell when it holds n/4 accepted images or after ``max_attempts`` attempts; an unfilled cell is
   reported (a warning and ``unfilled`` in the report), never silently short.

The report: phi(A, B) of the written set by the judges (hard reads, p >= 0.5) with a percentile-bootstrap
interval over images; the same by a second pair of judges trained with another seed (``check_judges``: the
acceptance judges select the images, so their phi is 0 by construction when the cells are full; the second pair
did not select them); counts, attempts and acceptance per cell and how many accepted images came from sources
that already had the target A; the judges' test AUROC; FID/KID against the run's real test images with the
floor of N real training images at the same N (``fid``).

This module holds the settings, the generation loop and the report; the parts are :mod:`.debias_ranking` (step
1), :mod:`.debias_judges` (step 3), :mod:`.debias_folder` (the images, columns and state of the output folder) and
:mod:`.debias_result` (:class:`DebiasResult`, its figure and the files it writes).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.biased import phi, resolve_attribute
from ..data.errors import DataError
from ..evaluation.stats import bootstrap_interval
from ..utils.errors import UsageError
from .audit_models import AttributeJudge
from .debias_folder import (CELLS, RESERVED, STATE_FILE, base_attribute, clashing_columns, column_name,
                            new_state, open_folder, quantize, read_images, reload_written, save_image)
from .debias_judges import CHECK_JUDGE_SEED, Judges, gated_judges, judge_test_auroc, make_check_judges
from .debias_ranking import RANKINGS, rank_prototypes
from .debias_result import DebiasResult

MODES = ("sample", "inversion")
DEFAULT_CONFIDENCE = 0.9
DEFAULT_MIN_JUDGE_AUROC = 0.9
DEFAULT_ATTEMPTS_PER_IMAGE = 20
RULE = ("accepted when the judge of A reads p(A) >= c for a target a = 1 (<= 1 - c for a = 0) and the judge of B "
        "reads B the same way for its target b, c = the confidence; hard reads for phi: p >= 0.5")


# ----------------------------------------------------------------------------- settings and names
def check_settings(n: int = 400, top_k: int = 2, steps: int | None = None, confidence: float = DEFAULT_CONFIDENCE,
                   min_judge_auroc: float = DEFAULT_MIN_JUDGE_AUROC, max_attempts: int | None = None,
                   batch: int = 64, mode: str = "sample", edit_guidance: float = 0.0, rank_limit: int = 4000,
                   ranking: str = "within", n_boot: int = 2000) -> None:
    """Every cheap check of the settings, before a model, judge or image is touched."""
    if n < 8 or n % 4:
        raise UsageError(f"--n must be a multiple of 4 (n/4 images per (A, B) cell) and at least 8, got {n}")
    for name, v, low in (("--top-k", top_k, 1), ("--batch", batch, 1), ("--rank-limit", rank_limit, 4),
                         ("n_boot", n_boot, 100)):
        if v < low:
            raise UsageError(f"{name} must be at least {low}, got {v}")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if max_attempts is not None and max_attempts < n // 4:
        raise UsageError(f"--max-attempts is per cell and must be at least n/4 = {n // 4}, got {max_attempts}")
    if not 0.5 <= confidence < 1:
        raise UsageError(f"--confidence must lie in [0.5, 1): a judge's probability for the target, got {confidence}")
    if not 0.5 < min_judge_auroc <= 1:
        raise UsageError(f"--min-judge-auroc must lie in (0.5, 1]: 0.5 is a judge at chance, got {min_judge_auroc}")
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if ranking not in RANKINGS:
        raise UsageError(f"--ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    if not edit_guidance >= 0:
        raise UsageError(f"--edit-guidance must be >= 0 (0 = the decoder's own conditional), got {edit_guidance}")


def parse_pair(text: str) -> tuple[str, str]:
    """``"mark,footwear"`` -> ("mark", "footwear"): the two attributes of ``--decouple``."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"--decouple takes two attributes A,B (A is edited, B comes from the source image), "
                         f"e.g. mark,footwear; got {text!r}")
    return parts[0], parts[1]


def phi_interval(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """phi(a, b) of two binary vectors with a 95 % percentile-bootstrap interval over items and the cell counts."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    rows = np.stack([a, b]).astype(np.float64)
    ci = bootstrap_interval(rows, lambda m: phi(m[0] > 0.5, m[1] > 0.5), n_boot=n_boot, seed=seed) if len(a) > 1 \
        else None
    cells = {f"{i},{j}": int(((a == i) & (b == j)).sum()) for i, j in CELLS}
    return {"phi": phi(a, b) if len(a) else None, "ci95": None if ci is None else [ci[0], ci[1]], "n": int(len(a)),
            "cells": cells}


def _attributes_and_columns(a: str, b: str) -> tuple[str, str, str, str]:
    """(base A, base B, column of A, column of B), refused when A and B are one attribute or the columns clash."""
    base_a, base_b = base_attribute(a), base_attribute(b)
    if base_a == base_b:
        raise UsageError(f"--decouple needs two different attributes; got {a!r} and {b!r}")
    col_a, col_b = column_name(a), column_name(b)
    if clashing_columns(col_a, col_b):
        raise UsageError(f"the attributes' CSV columns would be {col_a!r} and {col_b!r}, which clash with each other "
                         f"or with the set's own columns ({', '.join(RESERVED)}); rename the attribute")
    return base_a, base_b, col_a, col_b


def _refuse_guidance_with_cfg(pat, edit_guidance: float) -> None:
    cfg_w = float(getattr(pat.config.sample, "guidance", 0.0) or 0.0)
    if edit_guidance and cfg_w:
        raise UsageError(f"--edit-guidance {edit_guidance:g} cannot be combined with this run's classifier-free "
                         f"guidance on s (sample.guidance {cfg_w:g}); use --edit-guidance 0")


def _training_labels(pat, base_a: str, base_b: str) -> tuple[np.ndarray, np.ndarray]:
    """A and B of every training image, refused when either has one value only (or is unknown in a split)."""
    train_ds = pat.dataset("train")
    y_a, y_b = resolve_attribute(train_ds, base_a), resolve_attribute(train_ds, base_b)
    resolve_attribute(pat.dataset("test"), base_a), resolve_attribute(pat.dataset("test"), base_b)
    for name, y in ((base_b, y_b), (base_a, y_a)):
        if y.all() or not y.any():
            raise DataError(f"every training image {'has' if y.all() else 'lacks'} {name}: it cannot be decoupled")
    return y_a, y_b


def _source_pools(y_b: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """b -> the training images with B = b, in a seeded order: the source images of cell (a, b)."""
    return {v: np.random.default_rng([seed, 100, v]).permutation(np.flatnonzero(y_b == bool(v))) for v in (0, 1)}


def _attempt_budget(mode: str, max_attempts: int | None, need: int, pools: dict, name_b: str) -> int:
    """Attempts per cell: ``max_attempts`` (default 20 per image); in inversion mode at most one per source image."""
    if max_attempts is None:
        max_attempts = DEFAULT_ATTEMPTS_PER_IMAGE * need
    if mode == "inversion":  # an inversion decodes to the same image each time: one attempt per source image
        max_attempts = min(max_attempts, min(len(p) for p in pools.values()))
        if max_attempts < need:
            raise DataError(f"mode inversion tries each source image once, and only {max_attempts} training images "
                            f"have one value of {name_b}; lower --n to at most {4 * max_attempts} or use --mode sample")
    return max_attempts


def _identity(pat, **settings) -> dict:
    """What a debias folder must have been made with to be continued: the run, its weights and the settings."""
    from ..runs import sha256

    weights = getattr(pat, "weights_path", None)
    return {"run": str(getattr(pat, "run_dir", None)), "weights_sha256": sha256(weights) if weights else None,
            **settings, "image_size": pat.config.data.image_size}


# ----------------------------------------------------------------------------- main
def debias(pat, a: str, b: str, n: int = 400, out: str | Path | None = None, *, mode: str = "sample",
           top_k: int = 2, steps: int | None = None, edit_guidance: float = 0.0,
           confidence: float = DEFAULT_CONFIDENCE, min_judge_auroc: float = DEFAULT_MIN_JUDGE_AUROC,
           max_attempts: int | None = None, batch: int = 64, rank_limit: int = 4000, ranking: str = "within",
           seed: int = 0, check_judges: bool = True, fid: bool = False, fid_n_ref: int = 2000, extractor=None,
           n_boot: int = 2000, judges: tuple[AttributeJudge, AttributeJudge] | None = None,
           judge_cache: str | Path | None = None, progress: bool = False) -> DebiasResult:
    """Generate n images, n/4 in each (A, B) cell as the outside judges read them (module docstring).

    With ``out``, accepted images and the state are written there batch by batch, so an interrupted call continues
    where it stopped (the images already written count); call ``.write(out)`` on the result for the CSV, JSON and
    figure. Every check that input can fail runs before anything is generated or written."""
    t_start = time.time()
    check_settings(n, top_k, steps, confidence, min_judge_auroc, max_attempts, batch, mode, edit_guidance,
                   rank_limit, ranking, n_boot)
    base_a, base_b, col_a, col_b = _attributes_and_columns(a, b)
    _refuse_guidance_with_cfg(pat, edit_guidance)
    train_ds = pat.dataset("train")
    y_a, y_b = _training_labels(pat, base_a, base_b)
    need = n // 4
    pools = _source_pools(y_b, seed)
    steps = steps or (pat.config.sample.steps if mode == "sample" else 25)
    max_attempts = _attempt_budget(mode, max_attempts, need, pools, base_b)
    out = Path(out) if out is not None else None
    identity = _identity(pat, a=base_a, b=base_b, mode=mode, top_k=top_k, steps=steps,
                         edit_guidance=float(edit_guidance), confidence=confidence, ranking=ranking,
                         rank_limit=rank_limit, seed=seed)
    state = open_folder(out, identity, need)
    seconds = {}

    t0 = time.time()
    J = gated_judges(pat, judges, base_a, base_b, y_a, y_b, min_judge_auroc, judge_cache, progress, seed)
    seconds["judges"] = time.time() - t0

    t0 = time.time()
    choice = rank_prototypes(pat, y_a, y_b, base_a, ranking, top_k, rank_limit, seed)
    seconds["ranking"] = time.time() - t0

    t0 = time.time()
    state = state or new_state(identity)
    done_images = _fill(pat, train_ds, state, need, pools, choice.targets(), J, (y_a, y_b), out, mode=mode,
                        steps=steps, w=float(edit_guidance), confidence=confidence, max_attempts=max_attempts,
                        batch=batch, seed=seed, progress=progress, desc=f"debias {base_a} x {base_b}")
    seconds["generation"] = time.time() - t0

    rows = [r for ca, cb in CELLS for r in state["cells"][f"{ca},{cb}"]["accepted"]]
    images = torch.stack([done_images[r["file"]] for r in rows]) if rows else torch.zeros(
        0, pat.config.data.channels, pat.config.data.image_size, pat.config.data.image_size)
    sources = read_images(train_ds, [r["source"] for r in rows]) if rows else images.clone()
    ja = np.array([r["a"] for r in rows], bool)
    jb = np.array([r["b"] for r in rows], bool)
    cells, unfilled = _cell_counts(state, need, y_a, y_b), []
    for key, c in cells.items():
        if c["accepted"] < need:
            ca, cb = key.split(",")
            unfilled.append(f"{col_a}={ca},{col_b}={cb}")
            warnings.warn(f"cell {col_a}={ca}, {col_b}={cb} is unfilled: {c['accepted']} of {need} images after "
                          f"{c['attempts']} attempts (the budget --max-attempts {max_attempts}); raise it to continue, "
                          f"or use --edit-guidance / --mode inversion", stacklevel=2)

    t0 = time.time()
    check = None
    if check_judges and rows:
        check = _reread_by_check_judges(pat, images, ja, jb, base_a, base_b, y_a, y_b, judge_cache, progress, seed,
                                        n_boot)
    seconds["check_judges"] = time.time() - t0

    t0 = time.time()
    fid_report = _fid(pat, images, train_ds, fid_n_ref, seed, extractor, progress) if fid else None
    seconds["fid"] = time.time() - t0
    attempts = sum(c["attempts"] for c in cells.values())
    report = {
        "a": a, "b": b, "column_a": col_a, "column_b": col_b, "n": n, "n_written": len(rows),
        "complete": not unfilled, "unfilled": unfilled, "rule": RULE, "confidence": confidence,
        "phi_judges": phi_interval(ja, jb, n_boot, seed), "phi_check_judges": check,
        "phi_training": phi(y_a, y_b),
        "acceptance": len(rows) / attempts if attempts else 0.0, "attempts": attempts, "max_attempts": max_attempts,
        "cells": cells, "judges": J.report(min_judge_auroc), "prototypes": choice.report(),
        "mode": mode, "steps": steps, "edit_guidance": float(edit_guidance),
        "sampler": pat.config.sample.sampler if mode == "sample" else pat.decode_sampler,
        "top_k": top_k, "seed": seed, "run": identity["run"], "weights_sha256": identity["weights_sha256"],
        "fid": fid_report,
        "files": {"images": "images/a{A}_b{B}_{k}.png", "attributes": "attributes.csv (split = train)",
                  "load_with": f"--dataset folder --data-root DIR --attributes-csv DIR/attributes.csv (columns "
                               f"{col_a}, {col_b})"},
        "seconds": {**{k: round(v, 2) for k, v in seconds.items()}, "total": round(time.time() - t_start, 2),
                    "per_attempt": round(seconds["generation"] / max(1, sum(c["decoded"] for c in cells.values())),
                                         4)},
    }
    return DebiasResult(report, rows, images, sources, state)


def _cell_counts(state: dict, need: int, y_a: np.ndarray, y_b: np.ndarray) -> dict:
    """The ``cells`` section of ``debias.json``: per cell needed, accepted, attempts, decoded, acceptance, its share
    of the training data and how many accepted images came from sources that already had the target A."""
    cells = {}
    for ca, cb in CELLS:
        c = state["cells"][f"{ca},{cb}"]
        k = len(c["accepted"])
        cells[f"{ca},{cb}"] = {"needed": need, "accepted": k, "attempts": c["attempts"], "decoded": c["decoded"],
                               "acceptance": k / c["attempts"] if c["attempts"] else None,
                               "training_share": float(((y_a == ca) & (y_b == cb)).mean()),
                               "from_sources_with_target_a": sum(r["source_a"] == ca for r in c["accepted"])}
    return cells


def _reread_by_check_judges(pat, images: torch.Tensor, ja: np.ndarray, jb: np.ndarray, base_a: str, base_b: str,
                            y_a: np.ndarray, y_b: np.ndarray, judge_cache, progress: bool, seed: int,
                            n_boot: int) -> dict:
    """phi of the set as the second pair of judges reads it, and how often they agree with the first pair."""
    ja2, jb2 = make_check_judges(pat, base_a, base_b, y_a, y_b, judge_cache, progress)
    pa, pb = ja2.probability(images), jb2.probability(images)
    return {**phi_interval(pa >= 0.5, pb >= 0.5, n_boot, seed),
            "agreement_a": float(((pa >= 0.5) == ja).mean()), "agreement_b": float(((pb >= 0.5) == jb).mean()),
            "test_auroc": [judge_test_auroc(pat, ja2, base_a, seed), judge_test_auroc(pat, jb2, base_b, seed)],
            "seed": CHECK_JUDGE_SEED,
            "note": "a second pair of judges, trained with another seed, that did not select the images"}


# ----------------------------------------------------------------------------- the generation loop
def _fill(pat, train_ds, state: dict, need: int, pools: dict, targets: dict, J: Judges, labels, out: Path | None,
          *, mode: str, steps: int, w: float, confidence: float, max_attempts: int, batch: int, seed: int,
          progress: bool, desc: str) -> dict[str, torch.Tensor]:
    """Fill every cell of ``state`` to ``need`` accepted images or ``max_attempts`` attempts (module steps 2 to 4),
    in rounds (:func:`_next_round`), writing each accepted image and then the state when ``out`` is given.
    Returns the images by file."""
    from tqdm.auto import tqdm

    from ..utils.io import write_json

    done = reload_written(state, out, pat.config.data.channels)
    bar = tqdm(total=4 * need, initial=sum(min(len(c["accepted"]), need) for c in state["cells"].values()),
               desc=desc, disable=not progress, leave=False)
    while jobs := _next_round(state, need, pools, max_attempts, batch, seed):
        for i in range(0, len(jobs), batch):
            part = jobs[i:i + batch]
            x = _generate(pat, train_ds, part, targets, mode, steps, w)
            p_a, p_b = J.a.probability(x), J.b.probability(x)
            for k, job in enumerate(part):
                ca, cb, j = job[1], job[2], job[3]
                cell = state["cells"][f"{ca},{cb}"]
                if len(cell["accepted"]) >= need:
                    continue  # filled earlier in this batch: the attempt does not count
                cell["attempts"], cell["decoded"] = j + 1, cell["decoded"] + 1
                if not _in_target_cell(p_a[k], p_b[k], ca, cb, confidence):
                    continue
                row = _accepted_row(len(cell["accepted"]), job, float(p_a[k]), float(p_b[k]), labels, mode)
                if out is not None:
                    save_image(x[k], out / row["file"])
                done[row["file"]] = x[k]
                cell["accepted"].append(row)
                bar.update(1)
            if out is not None:
                write_json(out / STATE_FILE, state)  # after the images: a state never names a file not written
        bar.set_postfix(attempts=sum(c["attempts"] for c in state["cells"].values()))
    bar.close()
    return done


def _next_round(state: dict, need: int, pools: dict, max_attempts: int, batch: int, seed: int) -> list[tuple]:
    """The next attempts, as jobs (cell index, a, b, attempt, source, noise seed): each unfilled cell with budget
    left gets a batch sized by its acceptance so far. Attempt j of cell c uses source image
    pools[b][(j + a * len / 2) % len] and noise seed SeedSequence([seed, c, j]), so the set depends on neither the
    batching nor the interruptions. Empty when every cell is full or out of attempts."""
    jobs = []
    for ci, (ca, cb) in enumerate(CELLS):
        cell = state["cells"][f"{ca},{cb}"]
        left, budget = need - len(cell["accepted"]), max_attempts - cell["attempts"]
        if left <= 0 or budget <= 0:
            continue
        rate = (len(cell["accepted"]) + 1) / (cell["attempts"] + 2)
        m = int(min(batch, budget, max(4, math.ceil(1.2 * left / max(rate, 0.05)))))
        pool = pools[cb]
        for j in range(cell["attempts"], cell["attempts"] + m):
            src = int(pool[(j + ca * (len(pool) // 2)) % len(pool)])
            noise = int(np.random.SeedSequence([seed, ci, j]).generate_state(1)[0] & 0x7FFFFFFF)
            jobs.append((ci, ca, cb, j, src, noise))
    return jobs


def _in_target_cell(p_a: float, p_b: float, a: int, b: int, confidence: float) -> bool:
    """The acceptance rule (:data:`RULE`): both judges read the target cell with confidence."""
    return bool(((p_a >= confidence) if a else (p_a <= 1 - confidence)) and
                ((p_b >= confidence) if b else (p_b <= 1 - confidence)))


def _accepted_row(k: int, job: tuple, p_a: float, p_b: float, labels, mode: str) -> dict:
    """The row of the k-th accepted image of its cell (a row of attributes.csv)."""
    _, ca, cb, j, src, noise = job
    y_a, y_b = labels
    return {"file": f"images/a{ca}_b{cb}_{k:05d}.png", "split": "train", "a": int(p_a >= 0.5), "b": int(p_b >= 0.5),
            "target_a": ca, "target_b": cb, "p_a": p_a, "p_b": p_b, "source": src, "source_a": int(y_a[src]),
            "source_b": int(y_b[src]), "seed": noise if mode == "sample" else None, "attempt": j}


@torch.no_grad()
def _generate(pat, train_ds, jobs, targets, mode: str, steps: int, w: float) -> torch.Tensor:
    """One image per job (cell, a, b, attempt, source, noise seed), rounded to 8 bits."""
    src = [job[4] for job in jobs]
    x_src = train_ds.get_batch(src)
    s_src = pat.encode(x_src).s
    s_edit = s_src.clone()
    a = torch.tensor([job[1] for job in jobs], dtype=torch.bool)
    for j, (lo, hi) in targets.items():
        s_edit[:, j] = torch.where(a, hi, lo)
    against = s_src if w > 0 else None
    if mode == "sample":
        d = pat.config.data
        x_T = torch.stack([torch.randn((d.channels, d.image_size, d.image_size),
                                       generator=torch.Generator().manual_seed(job[5])) for job in jobs])
        out = pat.sample(s_edit, x_T=x_T, steps=steps, seed=jobs[0][5], guidance=w if w > 0 else None,
                         against=against)
    else:
        x_T = pat.invert(x_src, s_src, steps)
        out = pat.decode(x_T, s_edit, steps, guidance=w, against=against)
    return quantize(out)


def _fid(pat, images: torch.Tensor, train_ds, n_ref: int, seed: int, extractor, progress: bool) -> dict:
    """FID/KID of the set against the run's real test images, and of as many real training images (the floor)."""
    from ..evaluation.fid import InceptionFeatures, fid_kid

    n = int(images.shape[0])
    if n < 2:
        return {"skipped": f"N = {n} images: FID/KID need at least 2"}
    test_n = len(pat.dataset("test"))
    extractor = extractor or InceptionFeatures(pat.device)
    gen = fid_kid(images, pat.config.data, "test", min(n_ref, test_n), seed, progress, extractor=extractor)
    pick = np.sort(np.random.default_rng(seed + 3).choice(len(train_ds), min(n, len(train_ds)), replace=False))
    real = fid_kid(read_images(train_ds, pick), pat.config.data, "test", min(n_ref, test_n), seed, progress,
                   extractor=extractor)
    return {"fid": gen.fid, "kid": gen.kid, "kid_std": gen.kid_std, "n_generated": gen.n_generated,
            "n_reference": gen.n_reference, "real_floor": {"fid": real.fid, "kid": real.kid,
                                                           "kid_std": real.kid_std, "n": real.n_generated,
                                                           "what": "N real training images (biased) against the "
                                                                   "same test images"},
            "small_n": gen.protocol["small_n"], "note": gen.protocol["note"],
            "feature_network": gen.protocol["feature_network"]}
