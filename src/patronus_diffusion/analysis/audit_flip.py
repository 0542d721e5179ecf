"""The audit's counterfactual of one attribute A on its own: which prototypes flip A, and to what.

Steps 1 and 3 of :mod:`.audit`, shared by the audit and by the explorer's counterfactual view (``patronus explore
--classifier``):

* **rank**: A's top prototypes are the ``top_k`` with the highest single-prototype AUROC(A, s_j) over up to
  ``rank_limit`` training images of the run (a seeded subset, :func:`ranking_indices`);
* **flip**: per image, those prototypes are raised to their maximum over the ranking images where A is absent and
  lowered to their minimum there where A is present (:meth:`AttributeFlip.edit`), decoded from the image's own
  inversion.

:class:`ClassifierView` adds the user's classifier (loaded and checked by :func:`.audit_models.load_classifier`) and
gives one image's counterfactual with the classifier's probability before and after. Where no label says whether an
image has A (an upload, a prior sample), :meth:`AttributeFlip.guess_present` reads it from the image's s: nearer the
ranking images with A than those without, over A's top prototypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.biased import resolve_attribute
from ..data.errors import DataError
from ..edit import Edit, EditPlan, run_plan
from ..utils.errors import UsageError
from .audit_models import Classifier, load_classifier
from .quality import auroc
from .shortcut import rank_prototypes
from .verdicts import split_negation


def ranking_indices(y_train: np.ndarray, rank_limit: int, seed: int, attribute: str) -> np.ndarray:
    """The training images A's prototypes are ranked on: all of them, or ``rank_limit`` drawn with ``seed``."""
    idx = np.arange(len(y_train))
    if len(idx) > rank_limit:
        idx = np.sort(np.random.default_rng(seed + 2).choice(idx, rank_limit, replace=False))
    y = np.asarray(y_train)[idx]
    if y.all() or not y.any():
        raise DataError(f"the {len(idx)} training images drawn for ranking all {'have' if y.all() else 'lack'} "
                        f"{attribute}; raise --rank-limit")
    return idx


@dataclass
class AttributeFlip:
    """A's top prototypes (``prototypes``), every prototype's AUROC for A, maximum, minimum and std over the
    ranking images, and the mean s of A's top prototypes among the ranking images with and without A."""

    attribute: str
    prototypes: list[int]
    ranking: list[tuple[int, float]]
    auroc: np.ndarray
    high: np.ndarray
    low: np.ndarray
    sd: np.ndarray
    centre_with: np.ndarray
    centre_without: np.ndarray
    n_ranked: int

    def targets(self, present) -> dict[int, torch.Tensor]:
        """Per prototype of A, per image: its minimum where A is present, its maximum where A is absent."""
        present = np.asarray(present, bool)
        return {j: torch.as_tensor(np.where(present, self.low[j], self.high[j]), dtype=torch.float32)
                for j in self.prototypes}

    def edit(self, present) -> Edit:
        """The engine's edit that flips A on images where A is ``present`` (a bool per image)."""
        return Edit.set_all(self.targets(present), f"flip {self.attribute}")

    def guess_present(self, s) -> np.ndarray:
        """Whether A looks present in images of activations ``s`` (N, P) that no label describes: their s over A's
        top prototypes is nearer the mean of the ranking images with A than the mean of those without."""
        s = np.asarray(s, np.float64)[:, self.prototypes]
        return ((s - self.centre_with) ** 2).sum(1) < ((s - self.centre_without) ** 2).sum(1)

    def describe(self) -> dict:
        return {"attribute": self.attribute, "prototypes": [{"prototype": j, "auroc": float(self.auroc[j]),
                                                             "raise_to": float(self.high[j]),
                                                             "lower_to": float(self.low[j])} for j in self.prototypes],
                "ranked_on": f"{self.n_ranked} training images of the run"}


def fit_flip(pat, attribute: str, rank_idx: np.ndarray, y_rank: np.ndarray, top_k: int) -> AttributeFlip:
    """Rank the prototypes for ``attribute`` (the intervention, without ``not:``) on the training images
    ``rank_idx`` (``y_rank``: A on each) and keep the ``top_k``."""
    S = pat.encode_dataset("train", [int(i) for i in rank_idx]).s.numpy().astype(np.float64)
    y = np.asarray(y_rank, bool)
    ranking = rank_prototypes(S, y)
    own = [j for j, _ in ranking[:top_k]]
    return AttributeFlip(attribute, own, ranking, auroc(y, S), S.max(0), S.min(0), S.std(0),
                         S[y][:, own].mean(0), S[~y][:, own].mean(0), int(len(y)))


# ----------------------------------------------------------------------------- the explorer's view
@dataclass
class ClassifierView:
    """The user's classifier, the attribute it is shown against and that attribute's flip."""

    classifier: Classifier
    attribute: str  # as given: may be negated (not:A); the flip is about A
    flip: AttributeFlip
    test_labels: np.ndarray | None  # A (the intervention) on every test image, when the test split can be read
    record: dict | None

    def describe(self) -> dict:
        c = self.classifier
        label = (self.record or {}).get("label")
        return {"file": str(c.path), "attribute": self.attribute, "target": c.target,
                "predicts": f"class {c.target}" + (f" ({label})" if label and c.num_classes == 2 and c.target == 1
                                                   else ""),
                "flip": self.flip.describe(), "conversion": c.conversion(),
                "rule": "as patronus audit flips it: the attribute's top prototypes raised to their maximum over the "
                        "ranking images where it is absent, lowered to their minimum where present; decoded from the "
                        "image's own inversion with edit guidance w = 0; not confirmed by a judge (the audit does)"}

    def counterfactual(self, pat, x0: torch.Tensor, present: bool, steps: int, inverted=None,
                       guidance: float | None = None) -> dict:
        """One image's counterfactual (A flipped) with the classifier's probability of its target class on the
        image and on the counterfactual."""
        res = run_plan(pat, EditPlan(images=x0, edits=[self.flip.edit(np.array([present]))], steps=steps,
                                     inverted=inverted, guidance=guidance, edit_guidance=0.0))
        cf = res.images[0]
        before, after = (float(self.classifier.probability(v)[0]) for v in (x0, cf))
        return {"image": cf, "p_before": before, "p_after": after, "s_after": res.s_after[0, 0],
                "direction": f"{'lowered' if present else 'raised'} {self.flip.attribute}"}


def load_view(pat, path: str | Path, attribute: str | None = None, value_range=None, target: int | None = None,
              size=None, channels: int | None = None, top_k: int = 2, rank_limit: int = 4000,
              seed: int = 0) -> ClassifierView:
    """The classifier ``path`` (TorchScript; its record from ``patronus train-classifier`` beside it, when there,
    gives its attribute and input range, size and channels where they are not given) checked on the run's images,
    and ``attribute``'s flip (default: the record's label). Every bad input is a one-line :class:`UsageError` or
    :class:`DataError`."""
    from ..evaluation.classifier import read_record

    if not Path(path).exists() or Path(path).is_dir():
        raise UsageError(f"classifier file {path} {'is a folder' if Path(path).is_dir() else 'does not exist'}; give "
                         f"the TorchScript file (torch.jit.save)")
    record = read_record(path)
    attribute = attribute or (record or {}).get("label")
    if not attribute:
        raise UsageError(f"{path} has no record beside it naming its attribute ({Path(path).with_suffix('.json')}, "
                         f"written by `patronus train-classifier`); name one with --classifier-attribute")
    inp = (record or {}).get("input") or {}
    if value_range is None:
        value_range = inp.get("range")
    if top_k < 1 or top_k >= pat.num_prototypes:
        raise UsageError(f"--top-k must lie in 1 ... {pat.num_prototypes - 1}, got {top_k}")
    base, _ = split_negation(attribute)
    try:
        train_ds = pat.dataset("train")
    except DataError as e:
        raise DataError(f"--classifier needs the run's training images to rank the prototypes of {base}: {e}") \
            from None
    y_train = resolve_attribute(train_ds, base)
    rank_idx = ranking_indices(y_train, rank_limit, seed, base)
    d = pat.config.data
    if size is None and isinstance(inp.get("size"), list):
        size = "x".join(map(str, inp["size"]))
    channels = channels if channels is not None else inp.get("channels")
    clf = load_classifier(path, pat.device, d.image_size, d.channels, train_ds.get_batch([0, 1]), value_range,
                          size, channels, target)
    try:
        test_labels = resolve_attribute(pat.dataset("test"), base)
    except DataError:
        test_labels = None
    return ClassifierView(clf, attribute, fit_flip(pat, base, rank_idx, y_train[rank_idx], top_k), test_labels,
                          record)


__all__ = ["AttributeFlip", "ClassifierView", "fit_flip", "load_view", "ranking_indices"]
