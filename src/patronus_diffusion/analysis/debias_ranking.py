"""Which prototypes a debias set edits (:mod:`.debias`, step 1): A's prototypes, ranked within the strata of B.

``ranking="within"`` (the default): score_A = AUROC(A, s_j) averaged within B = 1 and within B = 0, score_B =
AUROC(B, s_j) averaged within A = 1 and A = 0; a prototype qualifies when it reads A more than B
(score_A - 0.5 > |score_B - 0.5|), so that on a biased run a prototype of B that merely co-occurs with A is never
edited; the ``top_k`` qualifying ones with the highest score_A are A's prototypes. Where a stratum holds only one
value of A (a run trained at phi = +-1) it falls back to the plain AUROC, with a warning; ``ranking="plain"`` is
the plain AUROC as ``patronus audit`` ranks. The edit targets are the plausible maximum (A present) and minimum
(A absent): the maximum and minimum of s_j over the ranking images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..data.errors import DataError
from ..utils.errors import UsageError
from .quality import auroc

RANKINGS = ("within", "plain")


def within_strata_auroc(S: np.ndarray, y: np.ndarray, strata: np.ndarray) -> np.ndarray | None:
    """Mean over the strata (values of ``strata``) of AUROC(y, s_j) within each: strata holding both values of y,
    at least 2 of each. None when no stratum does."""
    parts = [auroc(y[strata == v], S[strata == v]) for v in (True, False)
             if min(int((y & (strata == v)).sum()), int((~y & (strata == v)).sum())) >= 2]
    return np.mean(parts, 0) if parts else None


def choose_prototypes(S: np.ndarray, y_a: np.ndarray, y_b: np.ndarray, ranking: str, top_k: int) -> dict:
    """A's prototypes (module docstring) and the numbers they were chosen by: ``own`` (edited), ``score_a``,
    ``score_b``, ``plain`` (AUROC(A, s_j)), ``excluded`` (top-k by score_A that read B as much) and ``ranking``."""
    plain = auroc(y_a, S)
    score_a = within_strata_auroc(S, y_a, y_b) if ranking == "within" else None
    score_b = within_strata_auroc(S, y_b, y_a) if ranking == "within" else None
    if ranking == "within" and (score_a is None or score_b is None):
        warnings.warn("no stratum of B holds both values of A among the ranking images (a run trained with A and B "
                      "tied completely?): A's prototypes are ranked by the plain AUROC, which cannot tell A's "
                      "prototypes from B's", stacklevel=4)
        ranking = "plain (fallback: no stratum of B holds both values of A)"
    if score_a is None or score_b is None:
        return _by_plain_auroc(plain, top_k, ranking)
    return _by_within_scores(score_a, score_b, plain, top_k)


def _by_plain_auroc(plain: np.ndarray, top_k: int, ranking: str) -> dict:
    order = [int(j) for j in np.argsort(-np.nan_to_num(plain, nan=0.0), kind="stable")]
    return {"own": order[:top_k], "score_a": plain, "score_b": None, "plain": plain, "excluded": [],
            "ranking": ranking}


def _by_within_scores(score_a: np.ndarray, score_b: np.ndarray, plain: np.ndarray, top_k: int) -> dict:
    sa, sb = np.nan_to_num(score_a, nan=0.5), np.nan_to_num(score_b, nan=0.5)
    order = [int(j) for j in np.argsort(-sa, kind="stable")]
    reads_a_more = [j for j in order if sa[j] - 0.5 > abs(sb[j] - 0.5)]
    excluded = [j for j in order[:top_k] if j not in reads_a_more]
    own = reads_a_more[:top_k]
    if not own:
        warnings.warn("no prototype reads A more than B within the other's strata; the one with the highest AUROC "
                      "for A within B is edited, and it carries B too", stacklevel=5)
        own = order[:1]
    return {"own": own, "score_a": score_a, "score_b": score_b, "plain": plain, "excluded": excluded,
            "ranking": f"within (score_A - 0.5 > |score_B - 0.5|; {len(own)} of top-k {top_k} qualify)"}


@dataclass
class PrototypeChoice:
    """A's prototypes (``chosen``, from :func:`choose_prototypes`) with their edit targets: ``highest`` and
    ``lowest`` s_j over the ``n_ranked`` ranking images."""

    chosen: dict
    highest: np.ndarray
    lowest: np.ndarray
    n_ranked: int

    @property
    def edited(self) -> list[int]:
        return self.chosen["own"]

    def targets(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Prototype -> (its value for a = 0, its value for a = 1)."""
        return {j: (torch.tensor(self.lowest[j], dtype=torch.float32),
                    torch.tensor(self.highest[j], dtype=torch.float32)) for j in self.edited}

    def report(self) -> dict:
        """The ``prototypes`` section of ``debias.json``."""
        c = self.chosen
        return {"edited": [{"prototype": j, "score_a": _score(c["score_a"], j), "score_b": _score(c["score_b"], j),
                            "auroc": float(c["plain"][j]), "raise_to": float(self.highest[j]),
                            "lower_to": float(self.lowest[j])} for j in self.edited],
                "excluded_for_reading_b": [{"prototype": j, "score_a": _score(c["score_a"], j),
                                            "score_b": _score(c["score_b"], j)} for j in c["excluded"]],
                "ranking": c["ranking"], "ranked_on": f"{self.n_ranked} training images of the run"}


def _score(scores, j: int):
    return None if scores is None or not np.isfinite(scores[j]) else float(scores[j])


def rank_prototypes(pat, y_a: np.ndarray, y_b: np.ndarray, name_a: str, ranking: str, top_k: int, rank_limit: int,
                    seed: int) -> PrototypeChoice:
    """Encode up to ``rank_limit`` training images of the run (a seeded subset) and choose A's prototypes on them;
    ``y_a``, ``y_b``: A and B of every training image."""
    rank_idx = np.arange(len(y_a))
    if len(rank_idx) > rank_limit:
        rank_idx = np.sort(np.random.default_rng(seed + 2).choice(rank_idx, rank_limit, replace=False))
    if y_a[rank_idx].all() or not y_a[rank_idx].any():
        raise DataError(f"the {len(rank_idx)} training images drawn for ranking all "
                        f"{'have' if y_a[rank_idx].all() else 'lack'} {name_a}; raise --rank-limit")
    if top_k >= pat.num_prototypes:
        raise UsageError(f"--top-k {top_k} would edit all {pat.num_prototypes} prototypes; lower --top-k")
    S = pat.encode_dataset("train", rank_idx.tolist()).s.numpy().astype(np.float64)
    chosen = choose_prototypes(S, y_a[rank_idx], y_b[rank_idx], ranking, top_k)
    return PrototypeChoice(chosen, S.max(0), S.min(0), len(rank_idx))
