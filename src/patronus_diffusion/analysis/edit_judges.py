"""What something outside the model sees of the edits of ``evaluate-edits``: the model's own encoder re-reads
every edit (rise, off-target), so these two checks use networks that never made a prototype.

* :func:`measure_realism`: KID of the edited images and of the reconstructions against real images, at matched N
  (the Inception network of FID): a rise bought with artefacts shows as a higher KID than the reconstructions'.
* :func:`class_steerability`: CB-AE's steerability with class labels as the concepts. For each class c, its top
  prototypes (by AUROC of s_J for "c vs the rest" over the reference set X) are raised to their own max over X on
  every evaluated image; an independent judge (a classifier trained on real images only) reads the edits.

      steerability_c = #{images the judge reads as c after the edit} / #{images it reads as another class before}

  "before" means both the image and its reconstruction, so an image the judge already calls c never counts.
"""

from __future__ import annotations

import math

import torch

from ..edit import Edit, EditPlan, run_plan
from ..evaluation.stats import true_median


def measure_realism(pat, ev, n_ref: int = 2000, progress: bool = True, extractor=None) -> dict:
    """KID against ``n_ref`` real test images of the headline edits and of the reconstructions, at matched N.

    With B images and J prototypes there are J x B headline edits but only B reconstructions, and a KID is only
    comparable at equal N. So the edits are scored in J rounds of B images each: round r takes image i edited by
    prototype position (i + r) mod J, so every edit is scored exactly once and every round has one edit per image.
    Reported: the median KID over the rounds with its range, beside the reconstructions' KID (N = B)."""
    from ..evaluation.fid import InceptionFeatures, kernel_inception_distance, reference_statistics, stream_features

    extractor = extractor or InceptionFeatures(device=pat.device)
    ref = reference_statistics(pat.config.data, "test", n_ref, 0, extractor, None, progress)
    f_ref = ref["features"]
    n_j, b = len(ev.prototypes), ev.base.reconstruction.shape[0]
    f_rec, _ = stream_features(extractor, ev.base.reconstruction, progress, "reconstructions -> inception")
    f_edit, _ = stream_features(extractor, ev.headline_edits(), progress, "edits -> inception")  # (J * B, F)
    f_edit = f_edit.reshape(n_j, b, -1)
    kid_rec, kid_rec_std = kernel_inception_distance(f_rec, f_ref, seed=ev.plan.seed)
    kids = []
    for r in range(n_j):
        rows = torch.stack([f_edit[(i + r) % n_j, i] for i in range(b)])
        kids.append(kernel_inception_distance(rows, f_ref, seed=ev.plan.seed)[0])
    return {"what": "KID (unbiased MMD^2) against real test images at matched N: the reconstructions (N = B) and the "
                    "headline edits in J rounds of B images (round r: image i edited by prototype position (i + r) "
                    "mod J, so every edit is scored once); edited = median, min and max over the rounds",
            "edited": {"kid_median": true_median(kids), "kid_min": min(kids), "kid_max": max(kids), "rounds": n_j,
                       "n": b},
            "reconstruction": {"kid": kid_rec, "kid_std": kid_rec_std, "n": b,
                               "n_reference": int(ref["meta"]["n_images"])},
            "n_reference": int(ref["meta"]["n_images"])}


def auroc_per_prototype(s: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """AUROC of each column of s (N, P) for the boolean labels ``positive`` (N,), by ranks (ties averaged):
    (mean rank of the positives - (n_pos + 1) / 2) / n_neg. NaN when one group is empty."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.full((s.shape[1],), float("nan"))
    from scipy.stats import rankdata

    ranks = torch.as_tensor(rankdata(s.double().numpy(), axis=0))
    return ((ranks[positive].mean(0) - (n_pos + 1) / 2) / n_neg).float()


def class_steerability(pat, ev, judge, reference_labels: torch.Tensor, top_k: int = 3,
                       progress: bool = False) -> dict:
    """The steerability of every class (module docstring) on the images of the evaluation ``ev``, decoded from
    their cached inversion unguided (w = 0) with the evaluation's steps; ``reference_labels`` (n,) are the class
    labels of the reference set X (whose s is ``ev.plan.reference.s``)."""
    ref = ev.plan.reference
    labels = torch.as_tensor(reference_labels).long()
    num_classes = int(judge.meta.get("num_classes", int(labels.max()) + 1))
    names = judge.meta.get("class_names") or [str(c) for c in range(num_classes)]
    own_max = ref.s.max(0).values
    before_x0 = judge.predict(ev.base.x0)
    before_rec = judge.predict(ev.base.reconstruction)
    tops, edits = [], []
    for c in range(num_classes):
        auc = auroc_per_prototype(ref.s, labels == c)
        top = [int(j) for j in torch.argsort(torch.nan_to_num(auc, nan=-1.0), descending=True)[:top_k]]
        tops.append((top, [round(float(auc[j]), 3) for j in top]))
        edits.append(Edit.set_all({j: float(own_max[j]) for j in top}, label=f"class {c}: top {top_k} to own max"))
    res = run_plan(pat, EditPlan(images=ev.base.x0, edits=edits, inverted=ev.base.inverted, steps=ev.base.steps,
                                 sampler=ev.plan.sampler, reference=ref, seed=ev.plan.seed, edit_guidance=0.0),
                   progress)
    after = judge.predict(res.images.flatten(0, 1)).view(num_classes, -1)
    rows, steered, eligible = [], 0, 0
    for c in range(num_classes):
        other = (before_x0 != c) & (before_rec != c)
        n, k = int(other.sum()), int((after[c][other] == c).sum())
        steered, eligible = steered + k, eligible + n
        rows.append({"class": c, "name": names[c] if c < len(names) else str(c), "prototypes": tops[c][0],
                     "auroc": tops[c][1], "n_images": n, "n_steered": k,
                     "steerability": round(k / n, 4) if n else None})
    pooled = steered / eligible if eligible else None
    se = math.sqrt(pooled * (1 - pooled) / eligible) if eligible else None
    shares = [r["steerability"] for r in rows if r["steerability"] is not None]
    return {"what": "per class: its top prototypes by AUROC over the reference set raised to their own max on the "
                    "images the judge reads as another class (image and reconstruction), decoded unguided; share the "
                    "judge then reads as the class (CB-AE's steerability)",
            "judge": {k: judge.meta.get(k) for k in ("architecture", "test_accuracy")}, "top_k": top_k,
            "median": true_median(shares, 4),
            "pooled": None if pooled is None else round(pooled, 4),
            "pooled_standard_error": None if se is None else round(se, 4),
            "n_steered": steered, "n_edits": eligible, "per_class": rows}
