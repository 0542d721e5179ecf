"""The outside judges of a debias set (:mod:`.debias`, step 3): who decides that an image is in its target cell.

They are those of ``patronus audit`` (:mod:`.audit_models`): the project's class judge for ``class:`` attributes,
else a small CNN trained on the run's real training images only (cached). Each must read its attribute on the run's
test split with AUROC >= ``min_judge_auroc`` (:func:`gated_judges`), or nothing runs. A second pair, trained with
another seed (:data:`CHECK_JUDGE_SEED`), re-reads the finished set: the acceptance judges selected the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.biased import resolve_attribute
from ..utils.errors import UsageError
from .audit_models import AttributeJudge, attribute_judge, class_judge
from .debias_folder import base_attribute, read_images
from .quality import auroc

CHECK_JUDGE_SEED = 54321  # the second pair of judges: not the acceptance judges' seed (12345)


@dataclass
class Judges:
    """The acceptance judges of A and B with their AUROC on the run's test split."""

    a: AttributeJudge
    b: AttributeJudge
    auroc_a: float
    auroc_b: float

    def report(self, min_judge_auroc: float) -> dict:
        """The ``judges`` section of ``debias.json``."""
        return {"a": {**_described(self.a), "test_auroc": self.auroc_a},
                "b": {**_described(self.b), "test_auroc": self.auroc_b}, "min_judge_auroc": min_judge_auroc}


def _described(judge: AttributeJudge) -> dict:
    return {k: v for k, v in judge.meta.items() if k != "key"}


def _class_judge_seeded(data_cfg, classes, device, seed: int, cache_dir, progress) -> AttributeJudge:
    from ..evaluation.judge import JudgeSettings, get_judge

    j = get_judge(data_cfg, JudgeSettings(seed=seed), cache_dir=cache_dir, device=device, progress=progress)
    return AttributeJudge(j.net, sorted(int(c) for c in classes), {
        "kind": "class judge", "classes": sorted(int(c) for c in classes), "file": j.meta.get("cache_file"),
        "seed": seed, "class_test_accuracy": j.meta.get("test_accuracy")})


def make_judge(pat, spec: str, y_train: np.ndarray, cache_dir=None, progress: bool = False,
               seed: int | None = None) -> AttributeJudge:
    """The outside judge of ``spec`` (its base attribute), as ``patronus audit`` builds it; with ``seed`` one
    trained with that seed instead of the default (the second, checking pair)."""
    base = base_attribute(spec)
    train_ds = pat.dataset("train")
    if base.startswith("class:"):
        classes = sorted(set(np.asarray(train_ds.labels)[y_train].tolist()))
        if seed is not None:
            return _class_judge_seeded(pat.config.data, classes, pat.device, seed, cache_dir, progress)
        return class_judge(pat.config.data, classes, pat.device, progress, cache_dir)
    settings = None
    if seed is not None:
        from ..evaluation.judge import JudgeSettings

        settings = JudgeSettings(seed=seed)
    return attribute_judge(pat.config.data, base, train_ds, y_train, pat.device, settings=settings,
                           cache_dir=cache_dir, progress=progress)


def judge_test_auroc(pat, judge: AttributeJudge, spec: str, seed: int = 0, limit: int = 2000) -> float:
    """AUROC of the judge's p(spec) on up to ``limit`` images of the run's test split (a seeded subset)."""
    test = pat.dataset("test")
    y = resolve_attribute(test, base_attribute(spec))
    idx = np.arange(len(test))
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed + 1).choice(idx, limit, replace=False))
    return float(auroc(y[idx], judge.probability(read_images(test, idx))))


def gated_judges(pat, given: tuple[AttributeJudge, AttributeJudge] | None, base_a: str, base_b: str,
                 y_a: np.ndarray, y_b: np.ndarray, min_judge_auroc: float, cache_dir, progress: bool,
                 seed: int) -> Judges:
    """The judges of A and B (``given``, or made by :func:`make_judge`), refused unless each reads its attribute on
    the run's test split with AUROC >= ``min_judge_auroc``."""
    if given is None:
        given = (make_judge(pat, base_a, y_a, cache_dir, progress), make_judge(pat, base_b, y_b, cache_dir, progress))
    auc = [judge_test_auroc(pat, j, s, seed) for j, s in zip(given, (base_a, base_b))]
    for name, v in zip((base_a, base_b), auc):
        if not v >= min_judge_auroc:
            raise UsageError(f"the judge of {name} reads it on the run's test images with AUROC {v:.3f} < "
                             f"--min-judge-auroc {min_judge_auroc:g}: it cannot confirm a cell of {name}; choose an "
                             f"attribute the images show")
    return Judges(given[0], given[1], auc[0], auc[1])


def make_check_judges(pat, base_a: str, base_b: str, y_a: np.ndarray, y_b: np.ndarray, cache_dir,
                 progress: bool) -> tuple[AttributeJudge, AttributeJudge]:
    """The second pair of judges, trained with :data:`CHECK_JUDGE_SEED`."""
    return (make_judge(pat, base_a, y_a, cache_dir, progress, CHECK_JUDGE_SEED),
            make_judge(pat, base_b, y_b, cache_dir, progress, CHECK_JUDGE_SEED))
