"""Shortcut diagnosis: does the model tie attribute A to attribute B? (spec §6.9, automated)

1. **Rank** prototypes for A and for B by single-prototype AUROC(y, s_j) on *clean* data (where A and
   B are independent), so that a prototype ranks high for A because it responds to A, not to B. The
   **null prototypes** are the ``top_k`` others whose AUROC is closest to 0.5 for both attributes
   (smallest max(|AUROC_A - 0.5|, |AUROC_B - 0.5|)), the edited ones excluded.
2. **Edit causally, in each direction.** Direction A: n clean test images *without* A, half with B and half
   without (so that a rise *and* a fall of B can be seen); invert x0 -> x_T under s and decode from the same
   x_T with s (reconstruction x_rec), with s^A (the top-k prototypes of A raised to their plausible
   maximum max_X s_j, times ``edit_scale``: 1 is the paper's manipulation) and with s^0, the **null edit**:
   the null prototypes raised by a request of the same size. Size is counted in each prototype's own
   standard deviation over the clean training images (raw s scales differ between prototypes): image i's
   request to A's prototypes totals z_i = sum_j (s'_j - s_ij) / sd_j, and each of the m null prototypes k
   gets s_ik + (z_i / m) sd_k. Direction B likewise, on images without B, half with A. Decoding uses
   ``edit_guidance`` w (default 0: the decoder's own conditional eps(s'); w > 0 adds w (eps(s') - eps(s))).
3. **Measure** with an independent attribute probe (a small CNN trained on clean data, so it does
   not use one attribute as evidence for the other) the probabilities pA, pB of every image, and the
   per-image effects  dA|A = pA(x^A) - pA(x_rec),  dB|A = pB(x^A) - pB(x_rec),  dB|0 = pB(x^0) - pB(x_rec).
4. **Score each direction** by its signed leak, per unit of the intended change, against two references:

       leak(A -> B)      = mean dB|A / mean dA|A
       null leak(A -> B) = mean dB|0 / mean dA|A    (the null edit, on the same images)
       cross-talk(A -> B) = (pB(A, B=b) - pB(not A, B=b)) / (pA(A, B=b) - pA(not A, B=b)) on clean test images,
                            averaged over b: how far the probe's B reading moves when A really changes and B
                            does not, i.e. what a perfect, coupling-free edit of A would register as a leak.

   +0.8 means "raising A raises B by 0.8 of what it does to A"; -0.8 "raising A *lowers* B" (the paper's
   black hair -> less smiling). The references are the model's entanglement (on data without any coupling a
   trained model still moves B a little under *any* edit) and the instrument's. The **score** is the part of
   the leak they do not explain (:func:`unexplained`): leak - r for the reference r that leaks the same way
   the most, 0 when one leaks that way as much or more, the leak itself when none does. It is never larger than
   the leak nor of the other sign, so a reference can only withhold a claim of coupling, never create one.
5. **Tested** directions only: A -> B is tested when raising A's prototypes moves A by at least
   ``min_own_effect`` (default 0.25, mean change of the probe's probability; the score divides by it) *and*
   the probe reads both attributes on clean test images (AUROC >= ``min_probe_auroc``, default 0.75, for
   every seed's probe: A to measure the edit's own effect, B to see the leak); otherwise the report says
   which of these failed, and the direction's numbers are never used.
6. **Verdict** of a tested direction, from the 95 % percentile-bootstrap interval of its score (each resample
   draws the (seed, image) units of the edits, giving leak and null leak together, and, independently, the clean
   test images of the cross-talk). A coupling is claimed only when this interval excludes 0, i.e. the leak
   clears 0 and both references in at least 97.5 % of the resamples:

   - ``shortcut``: the interval lies beyond +-tau (either sign);
   - ``coupling below tau``: it excludes 0 but lies within +-tau (a coupling, smaller than tau);
   - ``no coupling detected``: it holds 0 and lies within +-tau;
   - ``inconclusive``: it crosses +tau or -tau; or it lies within +-tau only because a reference explains a
     raw leak whose own interval reaches tau (a coupling of tau or more could hide behind a reference that
     leaks that much itself).

   The model's verdict is the first of shortcut, inconclusive, coupling below tau, no coupling detected that
   one of its tested directions has (a direction that cannot be settled keeps the model from the two weaker
   verdicts); with no tested direction (a blind probe included) it is ``inconclusive``. ``score`` and ``ci95``
   are the deciding direction's (the largest |score| among the tested directions with that verdict).
7. **The training labels.** A claimed coupling (shortcut, or below tau) is checked against the run's own training
   labels of A and B (:func:`~.verdicts.check_training_labels`): where their phi lies within the chance band
   +-1.96/sqrt(N) or has the other sign, the model couples A and B without its data holding that correlation,
   and the verdict reads ``entanglement`` instead (the data gave no shortcut to learn; the model ties the two by
   itself). Every verdict's reason quotes the labels' phi; a run whose training data lack either label is not
   checked, and says so.
8. **Naming.** ``not:A`` runs exactly the intervention of A (A's prototypes raised on images without A) and
   negates the reading: a change of not:A is minus the change of A, so every leak, null leak, cross-talk, score
   and interval changes sign (for one negated name; two cancel), and verdicts do not change.

The rules of steps 4-7 are :mod:`.verdicts`; the result (its files, printout and figure) is
:class:`~.shortcut_result.DiagnosisResult`; every pair of many attributes is :mod:`.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.biased import correlated_subset, phi, resolve_attribute
from ..data.errors import DataError
from ..edit import Edit, EditPlan, run_plan
from ..utils.errors import UsageError
from .quality import auroc
from .shortcut_result import DiagnosisResult, figure_data
from .verdicts import (COUPLING_RULE, DEFAULT_MIN_OWN_EFFECT, DEFAULT_MIN_PROBE_AUROC, DEFAULT_THRESHOLD, VERDICT_RULES,
                       assess, check_training_labels, label_coupling, split_negation)

DEFAULT_EDIT_GUIDANCE = 0.0
EDIT_GUIDANCE_NOTE = ("w = 0 (the default) decodes each edit with the model's own conditional eps(s'), so the "
                      "diagnosis reads what the model itself ties together; w > 0 decodes eps(s') + w (eps(s') - "
                      "eps(s)), which amplifies whatever the edit changes, off-target changes included")


# ----------------------------------------------------------------------------- probe
class AttributeProbe(nn.Module):
    """Small CNN -> one logit per attribute; trained on clean images, used only to measure edits."""

    def __init__(self, channels: int, n_out: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def train_probe(images: torch.Tensor, targets: np.ndarray, seed: int = 0, epochs: int = 8, batch: int = 64,
                lr: float = 3e-3, progress: bool = False) -> AttributeProbe:
    """Fit the probe with binary cross-entropy on (images (N, C, H, W), targets (N, K) in {0, 1})."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = AttributeProbe(images.shape[1], targets.shape[1])
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    y = torch.as_tensor(targets, dtype=torch.float32)
    for _ in tqdm(range(epochs), desc="probe", disable=not progress, leave=False):
        perm = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), batch):
            b = perm[i:i + batch]
            loss = F.binary_cross_entropy_with_logits(probe(images[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def probe_probabilities(probe: AttributeProbe, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    return torch.cat([torch.sigmoid(probe(images[i:i + batch].float())) for i in range(0, len(images), batch)]).numpy()


# ----------------------------------------------------------------------------- data
@dataclass
class CleanData:
    """Images with A and B independent: for ranking prototypes, training the probe, choosing edit images."""

    train_x: torch.Tensor
    train_y: np.ndarray  # (N, 2) A, B
    test_x: torch.Tensor
    test_y: np.ndarray
    source: str


def _load_xy(ds, a_spec: str, b_spec: str, limit: int, seed: int, decorrelate: bool):
    a, b = resolve_attribute(ds, a_spec), resolve_attribute(ds, b_spec)
    if decorrelate:
        idx = correlated_subset(a, b, 0.0, None, seed, p_a=float(np.clip(a.mean(), 0.05, 0.95)),
                                p_b=float(np.clip(b.mean(), 0.05, 0.95)))
    else:
        idx = np.arange(len(a))
    if limit and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    x = torch.cat([ds.get_batch(idx[i:i + 512].tolist()) for i in range(0, len(idx), 512)])
    return x, np.stack([a[idx], b[idx]], 1).astype(np.int64)


def clean_data(pat, a_spec: str, b_spec: str, probe_cfg=None, limit: int = 4000, seed: int = 0) -> CleanData:
    """The clean data: ``probe_cfg`` (a DataConfig of an unbiased dataset) as it is, or else a subset of
    the run's own data in which A and B are made independent (phi = 0) by subsampling."""
    decorrelate = probe_cfg is None
    cfg = probe_cfg or pat.config.data
    from ..data import load_dataset

    try:
        tr = _load_xy(load_dataset(cfg, "train"), a_spec, b_spec, limit, seed, decorrelate)
        te = _load_xy(load_dataset(cfg, "test"), a_spec, b_spec, limit, seed + 1, decorrelate)
    except DataError as e:
        if decorrelate:
            raise DataError(f"{e}. The run's data cannot be made unbiased; pass --probe-data DIR "
                            f"(with --probe-csv) holding images where {a_spec} and {b_spec} vary "
                            f"independently") from None
        raise
    source = f"{cfg.dataset}:{cfg.root}" + (" (decorrelated subset of the run's data)" if decorrelate else "")
    return CleanData(tr[0], tr[1], te[0], te[1], source)


def training_labels(pat, bases: list[str], ds=None) -> np.ndarray | None:
    """The labels (N, K) of ``bases`` on the run's own training split (the images the model learned from), or
    None when that split lacks one of them or cannot be read (the check of the labels then says so). ``ds``: that
    split, where the caller has already loaded it."""
    from ..data import load_dataset

    try:
        ds = ds if ds is not None else load_dataset(pat.config.data, "train")
        return np.stack([resolve_attribute(ds, b) for b in bases], 1).astype(np.int64)
    except (DataError, OSError):
        return None


# ----------------------------------------------------------------------------- settings
def check_settings(threshold: float = DEFAULT_THRESHOLD, edit_guidance: float = DEFAULT_EDIT_GUIDANCE,
                   min_probe_auroc: float = DEFAULT_MIN_PROBE_AUROC, edit_scale: float = 1.0, n_images: int = 2,
                   seeds: int = 1, top_k: int = 1, steps: int = 1,
                   min_own_effect: float = DEFAULT_MIN_OWN_EFFECT) -> None:
    """Every cheap check of the settings, before any model, probe or edit runs (a UsageError says what to change)."""
    if not edit_scale > 0:
        raise UsageError(f"edit_scale must be positive, got {edit_scale}")
    if not threshold > 0:
        raise UsageError(f"the threshold tau must be positive (--threshold), got {threshold}")
    if not edit_guidance >= 0:
        raise UsageError(f"the edit guidance weight must be >= 0 (--edit-guidance; 0 = the decoder's own "
                         f"conditional), got {edit_guidance}")
    if not 0.5 < min_probe_auroc <= 1:
        raise UsageError(f"--min-probe-auroc must lie in (0.5, 1]: 0.5 is a probe at chance, got {min_probe_auroc}")
    if not 0 < min_own_effect <= 1:
        raise UsageError(f"--min-own-effect must lie in (0, 1] (a change of probability; the score divides by it), "
                         f"got {min_own_effect}")
    for name, v, low in (("--n", n_images, 2), ("--seeds", seeds, 1), ("--top-k", top_k, 1), ("--steps", steps, 1)):
        if v < low:
            raise UsageError(f"{name} must be at least {low}, got {v}")


# ----------------------------------------------------------------------------- ranking
def rank_prototypes(S: np.ndarray, y: np.ndarray) -> list[tuple[int, float]]:
    """(prototype, AUROC) sorted by AUROC(y, s_j), highest first: prototypes more similar when y is present."""
    a = auroc(y, S)
    order = np.argsort(-np.nan_to_num(a, nan=0.0))
    return [(int(j), float(a[j])) for j in order]


def null_prototypes(auroc_a: np.ndarray, auroc_b: np.ndarray, exclude, k: int) -> list[tuple[int, float]]:
    """(prototype, association) of the ``k`` prototypes least associated with A and with B, by the ranking's
    own measure: association = max(|AUROC_A - 0.5|, |AUROC_B - 0.5|), smallest first; ``exclude`` (the edited
    prototypes) never. Fewer than k when fewer are left."""
    assoc = np.maximum(np.abs(np.asarray(auroc_a, np.float64) - 0.5), np.abs(np.asarray(auroc_b, np.float64) - 0.5))
    assoc = np.where(np.isfinite(assoc), assoc, np.inf)
    skip = set(int(j) for j in exclude)
    order = [int(j) for j in np.argsort(assoc, kind="stable") if int(j) not in skip]
    return [(j, float(assoc[j])) for j in order[:k]]


def matched_null_targets(s0: np.ndarray, own: list[int], values: np.ndarray, null: list[int],
                         sd: np.ndarray) -> tuple[dict[int, torch.Tensor], np.ndarray]:
    """Per-image targets of the null edit with the same request size as raising ``own`` to ``values``.

    Size is counted in each prototype's standard deviation ``sd`` over the clean training images: image i's
    own request totals z_i = sum_j (values_j - s_ij) / sd_j, and each null prototype k is set to
    s_ik + (z_i / len(null)) sd_k. Returns ({k: (n,) targets}, z)."""
    safe = np.where(sd > 0, sd, np.nan)
    z = np.nan_to_num(((values[own][None, :] - s0[:, own]) / safe[own][None, :]), nan=0.0).sum(1)
    per = z / max(len(null), 1)
    return {k: torch.as_tensor(s0[:, k] + per * sd[k], dtype=torch.float32) for k in null}, z


# ----------------------------------------------------------------------------- edits
def direction_effects(pat, x0: torch.Tensor, s0: np.ndarray, own: list[int], null: list[int], values: np.ndarray,
                      sd: np.ndarray, probe: AttributeProbe, steps: int, edit_guidance: float,
                      also: list[int] | None = None) -> dict:
    """One direction on its images: the reconstruction, ``own`` raised to ``values``, the matched null edit
    (and, for the figure, ``also`` raised), decoded from the same x_T in one engine plan, read by the probe.

    Returns per-edit probe changes against the reconstruction (n, 2) under "own", "null" (and "also"), the
    probabilities, the images, the null request sizes z and the edit guidance the engine used."""
    null_targets, z = matched_null_targets(s0, own, values, null, sd)
    edits = {"own": Edit.set_all({j: float(values[j]) for j in own}, "raise own"),
             "null": Edit.set_all(null_targets, "null edit")}
    if also:
        edits["also"] = Edit.set_all({j: float(values[j]) for j in also}, "raise other")
    plan = EditPlan(images=x0, steps=steps, reconstruction=True, edits=list(edits.values()),
                    edit_guidance=float(edit_guidance))
    res = run_plan(pat, plan)
    p_rec = probe_probabilities(probe, res.reconstruction)
    probs = {name: probe_probabilities(probe, res.images[i]) for i, name in enumerate(edits)}
    return {"d": {name: p - p_rec for name, p in probs.items()}, "p": probs, "p_rec": p_rec,
            "p_orig": probe_probabilities(probe, x0), "z": z,
            "images": {"x0": x0, "rec": res.reconstruction, **{name: res.images[i] for i, name in enumerate(edits)}},
            "edit_guidance": float(res.plan.edit_guidance or 0.0)}


def _stratified(rng: np.random.Generator, pools: list[np.ndarray], n: int) -> np.ndarray:
    """n indices drawn as evenly as possible from the pools (without replacement), sorted."""
    take = [min(len(p), n // len(pools)) for p in pools]
    short = n - sum(take)
    for k, p in enumerate(pools):  # fill from pools that have more
        extra = min(short, len(p) - take[k])
        take[k] += extra
        short -= extra
    picks = [rng.choice(p, t, replace=False) for p, t in zip(pools, take) if t > 0]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- main
def diagnose(pat, a_spec: str, b_spec: str, probe_cfg=None, n_images: int = 24, seeds: int = 3, top_k: int = 2,
             steps: int = 25, edit_scale: float = 1.0, threshold: float = DEFAULT_THRESHOLD, probe_limit: int = 4000,
             probe_epochs: int = 8, seed: int = 0, progress: bool = True,
             edit_guidance: float = DEFAULT_EDIT_GUIDANCE,
             min_probe_auroc: float = DEFAULT_MIN_PROBE_AUROC,
             min_own_effect: float = DEFAULT_MIN_OWN_EFFECT) -> DiagnosisResult:
    """Run the diagnosis (module docstring): a :class:`~.shortcut_result.DiagnosisResult` (its ``report`` holds
    every number; ``write(out)`` writes diagnosis.json, effects.csv, rankings.csv and diagnosis.png)."""
    check_settings(threshold, edit_guidance, min_probe_auroc, edit_scale, n_images, seeds, top_k, steps,
                   min_own_effect)
    cfg_w = float(getattr(pat.config.sample, "guidance", 0.0) or 0.0)
    if edit_guidance and cfg_w:
        raise UsageError(f"--edit-guidance {edit_guidance:g} cannot be combined with this run's classifier-free "
                         f"guidance on s (sample.guidance {cfg_w:g}); use --edit-guidance 0")
    (base_a, sign_a), (base_b, sign_b) = split_negation(a_spec), split_negation(b_spec)
    data = clean_data(pat, base_a, base_b, probe_cfg, probe_limit, seed)
    S_train = pat.encode(data.train_x).s.numpy().astype(np.float64)
    auc_a, auc_b = auroc(data.train_y[:, 0], S_train), auroc(data.train_y[:, 1], S_train)
    rank_a = rank_prototypes(S_train, data.train_y[:, 0])
    rank_b = rank_prototypes(S_train, data.train_y[:, 1])
    protos_a = [j for j, _ in rank_a[:top_k]]
    protos_b = [j for j, _ in rank_b[:top_k]]
    null = null_prototypes(auc_a, auc_b, protos_a + protos_b, top_k)
    if not null:
        raise UsageError(f"--top-k {top_k} edits all {S_train.shape[1]} prototypes for {a_spec} and {b_spec}, and "
                         f"leaves none for the null edit; lower --top-k")
    protos_null = [j for j, _ in null]
    # plausible maximum of every prototype over the clean training images (times edit_scale); the spread of
    # each prototype there measures request sizes
    values = edit_scale * S_train.max(0)
    sd = S_train.std(0)
    y = data.test_y
    pools_a = [np.flatnonzero((y[:, 0] == 0) & (y[:, 1] == v)) for v in (0, 1)]  # edit A: no A, B either way
    pools_b = [np.flatnonzero((y[:, 1] == 0) & (y[:, 0] == v)) for v in (0, 1)]  # edit B: no B, A either way
    for pools, (attr, other) in ((pools_a, (base_a, base_b)), (pools_b, (base_b, base_a))):
        if len(pools[0]) + len(pools[1]) < 2:
            raise DataError(f"the clean test split has {len(pools[0]) + len(pools[1])} images without {attr}; "
                            f"the edits need some, with and without {other} (use more or other clean data)")
    S_test = pat.encode(data.test_x).s.numpy().astype(np.float64)
    keys_a, keys_b = ("dA_A", "dB_A", "dA_0A", "dB_0A"), ("dB_B", "dA_B", "dB_0B", "dA_0B")
    pooled_a, pooled_b = {k: [] for k in keys_a}, {k: [] for k in keys_b}
    per_seed, probe_quality, clean_probs, first, used_w = [], [], [], None, set()
    z_sizes = {"a": [], "b": []}
    for r in tqdm(range(seeds), desc="diagnose seeds", disable=not progress):
        probe = train_probe(data.train_x, data.train_y, seed=seed + r, epochs=probe_epochs)
        p_test = probe_probabilities(probe, data.test_x)
        probe_quality.append([float(auroc(data.test_y[:, k], p_test[:, k])) for k in (0, 1)])
        rng = np.random.default_rng(seed + 1000 + r)
        pick_a, pick_b = _stratified(rng, pools_a, n_images), _stratified(rng, pools_b, n_images)
        ea = direction_effects(pat, data.test_x[pick_a], S_test[pick_a], protos_a, protos_null, values, sd, probe,
                               steps, edit_guidance, also=protos_b if first is None else None)
        eb = direction_effects(pat, data.test_x[pick_b], S_test[pick_b], protos_b, protos_null, values, sd, probe,
                               steps, edit_guidance)
        used_w |= {ea["edit_guidance"], eb["edit_guidance"]}
        z_sizes["a"].append(ea["z"])
        z_sizes["b"].append(eb["z"])
        seed_a = {"dA_A": ea["d"]["own"][:, 0], "dB_A": ea["d"]["own"][:, 1],
                  "dA_0A": ea["d"]["null"][:, 0], "dB_0A": ea["d"]["null"][:, 1]}
        seed_b = {"dB_B": eb["d"]["own"][:, 1], "dA_B": eb["d"]["own"][:, 0],
                  "dB_0B": eb["d"]["null"][:, 1], "dA_0B": eb["d"]["null"][:, 0]}
        clean_probs.append(p_test)
        per_seed.append(assess(seed_a, seed_b, threshold, (a_spec, b_spec), probe_auroc=tuple(probe_quality[-1]),
                               min_probe_auroc=min_probe_auroc, signs=(sign_a, sign_b), n_boot=200,
                               seed=seed + r, clean=([p_test], data.test_y), min_own_effect=min_own_effect)["score"])
        for k in keys_a:
            pooled_a[k].append(seed_a[k])
        for k in keys_b:
            pooled_b[k].append(seed_b[k])
        if first is None:
            first = ea
    if used_w != {float(edit_guidance)}:  # the engine decoded with another weight than asked: never report it wrongly
        raise RuntimeError(f"asked for edit guidance {edit_guidance}, the engine used {sorted(used_w)}")
    pooled_a = {k: np.concatenate(v) for k, v in pooled_a.items()}
    pooled_b = {k: np.concatenate(v) for k, v in pooled_b.items()}
    quality = np.asarray(probe_quality)
    lowest = (float(quality[:, 0].min()), float(quality[:, 1].min()))
    result = assess(pooled_a, pooled_b, threshold, (a_spec, b_spec), probe_auroc=lowest,
                    min_probe_auroc=min_probe_auroc, signs=(sign_a, sign_b), seed=seed,
                    clean=(clean_probs, data.test_y), min_own_effect=min_own_effect)
    y_run = training_labels(pat, [base_a, base_b])
    labels = None if y_run is None else label_coupling(y_run[:, 0], y_run[:, 1], sign_a * sign_b)
    result = check_training_labels(result, labels, (a_spec, b_spec))
    means = {k: float(np.mean(v)) for k, v in {**pooled_a, **pooled_b}.items()}
    seed_scores = np.array(per_seed, dtype=np.float64)
    dirs = result["directions"]
    negated = [n for n, s in ((a_spec, sign_a), (b_spec, sign_b)) if s < 0]
    report = {
        "a": a_spec, "b": b_spec, "clean_data": data.source,
        "intervention": {"a": base_a, "b": base_b, "negated": negated,
                         "note": "not:X runs the intervention of X (X's prototypes raised on images without X) "
                                 "and negates the reading of X" if negated else "as named"},
        "clean_train_correlation": phi(data.train_y[:, 0], data.train_y[:, 1]),
        "score": result["score"], "ci95": result["ci95"], "bootstrap_std": result["bootstrap_std"],
        "score_definition": COUPLING_RULE,
        "deciding_direction": result["deciding_direction"], "deciding_direction_key": result["deciding_direction_key"],
        "directions": dirs,
        "seed_scores": seed_scores.tolist(),
        "seed_std": (float(seed_scores[np.isfinite(seed_scores)].std()) if np.isfinite(seed_scores).any()
                     else float("nan")),
        "verdict": result["verdict"], "reason": result["reason"], "threshold": threshold,
        "training_labels": result["training_labels"],
        "verdict_before_label_check": result.get("verdict_before_label_check"),
        "verdict_rules": VERDICT_RULES,
        "own_effect": (means["dA_A"] + means["dB_B"]) / 2,
        "effects": {**means, **{f"{k}_{d}": dirs[d][k] for k in ("leak", "null_leak", "probe_crosstalk")
                                for d in ("a_to_b", "b_to_a")}},
        "effects_of": f"dA/dB: probe changes of the intervention's attributes {base_a} and {base_b} (before not:); "
                      f"_0A/_0B: under the null edit on direction A's/B's images",
        "prototypes": {"a": [{"prototype": j, "auroc": v} for j, v in rank_a[:max(top_k, 10)]],
                       "b": [{"prototype": j, "auroc": v} for j, v in rank_b[:max(top_k, 10)]],
                       "edited_a": protos_a, "edited_b": protos_b, "shared": sorted(set(protos_a) & set(protos_b)),
                       "edit_values": {str(j): float(values[j]) for j in sorted(set(protos_a) | set(protos_b))}},
        "null_edit": {"prototypes": protos_null,
                      "association": {str(j): a for j, a in null},
                      "auroc": {str(j): [float(auc_a[j]), float(auc_b[j])] for j in protos_null},
                      "request_std_units": {"a": float(np.mean(np.concatenate(z_sizes["a"]))),
                                            "b": float(np.mean(np.concatenate(z_sizes["b"])))},
                      "rule": "the top-k prototypes with the smallest max(|AUROC_A - 0.5|, |AUROC_B - 0.5|) on the "
                              "clean training images, the edited ones excluded; each image's request totals the "
                              "same size as the direction's own edit, in units of each prototype's std there"},
        "probe_test_auroc": {"a": float(quality[:, 0].mean()), "b": float(quality[:, 1].mean())},
        "probe_test_auroc_min": {"a": lowest[0], "b": lowest[1]},
        "probe_test_auroc_per_seed": quality.tolist(),
        "min_probe_auroc": min_probe_auroc, "min_own_effect": min_own_effect,
        "edit_guidance": float(edit_guidance), "edit_guidance_note": EDIT_GUIDANCE_NOTE,
        "run_sample_edit_guidance": float(getattr(pat.config.sample, "edit_guidance", 0.0) or 0.0),
        "cfg_guidance": cfg_w,
        "edit_images": f"direction A: clean test images without {base_a}, half with {base_b}; direction B: "
                       f"without {base_b}, half with {base_a}",
        "n_images_per_seed": int(len(pick_a)), "seeds": seeds, "steps": steps, "top_k": top_k,
        "edit_scale": edit_scale,
        "per_image": {**{k: v.tolist() for k, v in pooled_a.items()}, **{k: v.tolist() for k, v in pooled_b.items()}},
    }
    report["tested_directions"] = [d["edited"] for d in dirs.values() if d["tested"]]
    if not any(d["own_effect"] >= min_own_effect for d in dirs.values()) and pat.config.unet.cond_norm == "none":
        report["reason"] += ("; this model was trained without unet.cond_norm=layer, and such CPU-budget decoders "
                             "barely react to s: retrain with --set unet.cond_norm=layer (docs/quality.md)")
    return DiagnosisResult(report, figure_data(pat, report, first, (sign_a, sign_b)))
