"""Editing s: the pattern every Patronus explanation shares.

    s = f(x0)  ->  x_T = DDIM-invert(x0, s)  ->  s' = edit(s)  ->  x_hat = DDIM(x_T, s')

Only s changes; x_T keeps the image's remaining detail, so the decoded image differs from the
reconstruction by what the edited prototypes stand for. An edit is *faithful* when re-encoding x_hat
shows the requested rise of the edited s_J and little change in the other prototypes (the measure and
its baselines: :mod:`.measures`).

"max" edits use the plausible maximum max(s_X): the largest entry of s over a fixed, seeded
reference set X of images (the reference draws it from one unseeded batch; here it is reproducible).

This module holds the pieces every edit shares: the inversion (cached per model object, see
:func:`invert_images`), edits of s and their specs (``3=max``, ``5*2``, ``q0.9``), the reference set
X and the faithfulness measure. Decoding lives in the edit engine, :mod:`.engine` (one plan -> one
batched run -> one result), which imports from here and never the other way round.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from ..utils.errors import UsageError
from .measures import MIN_CHANGE, measure_edit, summarise_edit


@dataclass
class Inverted:
    """Images with their prototype vectors and inverted noise: everything an edit needs."""

    x0: torch.Tensor  # (B, C, H, W) in [-1, 1]
    s: torch.Tensor  # (B, P)
    x_T: torch.Tensor  # (B, C, H, W)
    steps: int


# ------------------------------------------------------------------------------ inversion (cached)
# x_T of every inversion, per model object and per (image bytes, s bytes, steps, scheme); a loaded model's weights
# do not change, so a hit is the same x_T. Patronus keeps its cache on itself (``pat.inversion_cache``, also used by
# ``pat.invert``); this weak index points at it (and holds the cache of other model objects): it goes with the model.
_INVERSIONS: "weakref.WeakKeyDictionary[object, OrderedDict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()
INVERSION_CACHE_SIZE = 32  # inversions kept per model (least recently used dropped first)


def inversion_key(x0: torch.Tensor, s: torch.Tensor, steps: int, scheme: str = "ddim") -> str:
    """Hash of the images' and s's float32 bytes (with their shapes), the step count and the inversion scheme."""
    h = hashlib.sha256()
    for t in (x0, s):
        a = t.detach().to("cpu", torch.float32).contiguous()
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.numpy().tobytes())
    h.update(f"steps={int(steps)} scheme={scheme}".encode())
    return h.hexdigest()


def _inversion_store(pat) -> OrderedDict | None:
    own = getattr(pat, "inversion_cache", None)  # a model that keeps its cache on itself (Patronus) shares it here
    try:
        if isinstance(own, OrderedDict):
            _INVERSIONS[pat] = own  # indexed weakly, so clear_inversion_cache() reaches it
            return own
        return _INVERSIONS.setdefault(pat, OrderedDict())
    except TypeError:  # an object that cannot be weakly referenced: only its own cache, if any
        return own if isinstance(own, OrderedDict) else None


def clear_inversion_cache(pat=None) -> None:
    """Forget the cached inversions of one model object (or of all)."""
    if pat is None:
        for store in list(_INVERSIONS.values()):
            store.clear()
        _INVERSIONS.clear()
    else:
        own = getattr(pat, "inversion_cache", None)
        if isinstance(own, OrderedDict):
            own.clear()
        _INVERSIONS.pop(pat, None)


def invert_images(pat, x0: torch.Tensor, steps: int | None = None, progress: bool = False,
                  cache: bool = True) -> Inverted:
    """Encode s = f(x0) and invert x0 -> x_T deterministically under that s.

    The inversion is the expensive part of every edit, so x_T is cached per model object, keyed by a
    hash of the bytes of x0 and s and the step count: analyses that edit the same images in one
    process invert them once. Every call returns its own copy of x_T.
    """
    steps = steps or pat.config.sample.ddim_steps
    s = pat.encode(x0).s
    store = _inversion_store(pat) if cache else None
    key = inversion_key(x0, s, steps, pat.inversion_tag) if store is not None else None
    if store is not None and key in store:
        store.move_to_end(key)
        x_T = store[key]
    else:
        x_T = pat.invert(x0, s, steps=steps, progress=progress)
        if store is not None:
            store[key] = x_T
            while len(store) > INVERSION_CACHE_SIZE:
                store.popitem(last=False)
    return Inverted(x0=x0, s=s, x_T=x_T.clone(), steps=steps)


def reference_indices(n_total: int, n: int = 256, seed: int = 0) -> list[int]:
    """The reference set X: the first ``n`` of the permutation of range(n_total) seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[: min(n, n_total)].tolist()


IMAGE_STREAM = "patronus:images"
"""Images a command edits or measures are drawn from a random stream of their own, never the reference set's."""


def fresh_indices(n_total: int, n: int, seed: int = 0, exclude: Sequence[int] = ()) -> list[int]:
    """``n`` indices of range(n_total) drawn with ``seed`` from the images' own stream, skipping ``exclude`` (the
    reference set X), so the images an edit is measured on are never the ones its targets were taken from.

    When fewer than ``n`` indices lie outside ``exclude`` (a tiny split), the rest come from it, with a warning."""
    key = int.from_bytes(hashlib.sha256(f"{IMAGE_STREAM}:{int(seed)}".encode()).digest()[:7], "little")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(key)).tolist()
    skip = set(exclude)
    picked = [i for i in perm if i not in skip][:n]
    if len(picked) < min(n, n_total):
        picked += [i for i in perm if i in skip][: min(n, n_total) - len(picked)]
        warnings.warn(f"only {n_total - len(skip & set(perm))} images lie outside the reference set; "
                      f"{len(picked) - (n_total - len(skip & set(perm)))} of the {len(picked)} picked come from it",
                      stacklevel=2)
    return picked


def reference_s(pat, n: int = 256, seed: int = 0, split: str = "test") -> torch.Tensor:
    """s of a fixed, seeded random subset X of ``n`` images of ``split`` (shape (n, P)): :func:`reference_indices`.

    A model that stores the s of this very set beside its weights (``pat.shipped_reference_s``: the shipped
    model's ``reference_s.safetensors``) serves it without the dataset."""
    shipped = getattr(pat, "shipped_reference_s", None)
    s = shipped(n, seed, split) if callable(shipped) else None
    if s is not None:
        return s
    ds = pat.dataset(split)
    return pat.encode_dataset(split, reference_indices(len(ds), n, seed)).s


def plausible_max(s_ref: torch.Tensor, quantile: float | None = None) -> float:
    """max(s_X) over all entries of the reference s (or a quantile of them, e.g. 0.99, to ignore outliers)."""
    if quantile is None:
        return float(s_ref.max())
    return float(torch.quantile(s_ref.flatten().double(), quantile))


def edit_s(s: torch.Tensor, prototypes: Sequence[int], value: float | torch.Tensor, mode: str = "set") -> torch.Tensor:
    """A copy of s with columns ``prototypes`` set to / scaled by / shifted by ``value``.

    ``value`` is a number or a tensor broadcastable to (B, len(prototypes)). ``mode``: set | scale | add.
    """
    if mode not in ("set", "scale", "add"):
        raise UsageError(f"edit mode must be set, scale or add, not {mode!r}")
    idx = list(prototypes)
    bad = [j for j in idx if not 0 <= j < s.shape[1]]
    if bad:
        raise UsageError(f"prototype index(es) {bad} out of range 0 ... {s.shape[1] - 1}")
    out = s.clone()
    v = torch.as_tensor(value, dtype=s.dtype)
    if mode == "set":
        out[:, idx] = v.expand(s.shape[0], len(idx)) if v.ndim else v
    elif mode == "scale":
        out[:, idx] = out[:, idx] * v
    else:
        out[:, idx] = out[:, idx] + v
    return out


def faithfulness(s_before: torch.Tensor, s_requested: torch.Tensor, s_after: torch.Tensor,
                 edited: Sequence[int], min_change: float = MIN_CHANGE) -> dict[str, torch.Tensor]:
    """Per-image rise, others and off_target of an edit against the baseline ``s_before``: the one measure,
    :func:`.measures.measure_edit`."""
    return measure_edit(s_before, s_requested, s_after, edited, min_change)


# ------------------------------------------------------------------------------ reference set X
@dataclass
class Reference:
    """The fixed, seeded reference set X behind "max" and quantile edits (saved with every result)."""

    s: torch.Tensor  # (n, P)
    n: int
    seed: int
    split: str

    @property
    def max(self) -> float:
        return plausible_max(self.s)

    def quantile(self, q: float, prototype: int | None = None) -> float:
        """Quantile q of s_J over X for one prototype J (or of all entries when ``prototype`` is None)."""
        if not 0.0 <= q <= 1.0:
            raise UsageError(f"quantile must lie in [0, 1], got {q}")
        vals = self.s.flatten() if prototype is None else self.s[:, prototype]
        return float(torch.quantile(vals.double(), q))

    def to_json(self) -> dict:
        return {"split": self.split, "n": self.n, "seed": self.seed, "max_s_X": round(self.max, 6),
                "rule": "max over every entry of s of a seeded random subset X of the split"}


def reference_set(pat, n: int = 256, seed: int = 0, split: str = "test") -> Reference:
    """:func:`reference_s` wrapped with its provenance."""
    s = reference_s(pat, n=n, seed=seed, split=split)
    return Reference(s=s, n=int(s.shape[0]), seed=seed, split=split)


# ------------------------------------------------------------------------------ edit specs
def resolve_value(token: str | float, prototype: int, ref: Reference | None) -> float:
    """A target value for s_J: a number, ``max`` (= max(s_X)), ``F*max``/``Fmax`` (a multiple of it),
    or ``qF`` (the quantile F in [0, 1] of s_J over the reference set X)."""
    if isinstance(token, (int, float)):
        return float(token)
    text = str(token).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    if ref is None:
        raise UsageError(f"value {token!r} needs a reference set (numbers work without one)")
    if text.endswith("max"):
        factor = text[:-3].rstrip("*") or "1"
        try:
            return float(factor) * ref.max
        except ValueError:
            raise UsageError(f"cannot read {token!r}; write e.g. max, 1.5max or 0.5*max") from None
    if text.startswith("q"):
        try:
            return ref.quantile(float(text[1:]), prototype)
        except ValueError:
            raise UsageError(f"cannot read {token!r}; write a quantile as q0.95 (between q0 and q1)") from None
    raise UsageError(f"cannot read edit value {token!r}; use a number, max, 1.5max or q0.9")


@dataclass
class EditOp:
    """One change of s: ``s_J = value`` (set), ``s_J *= value`` (scale) or ``s_J += value`` (add)."""

    prototype: int
    mode: str
    value: str

    def __str__(self) -> str:
        sym = {"set": "=", "scale": "*", "add": "+"}[self.mode]
        return f"p{self.prototype}{sym}{self.value}"


def parse_edit(spec: str, num_prototypes: int) -> list[EditOp]:
    """Parse ``"3=max,5=0,7*1.5,2+0.5"`` into edit operations (all applied together)."""
    ops = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        for sym, mode in (("=", "set"), ("*", "scale"), ("+", "add")):
            if sym in part:
                j, v = part.split(sym, 1)
                break
        else:
            raise UsageError(f"cannot read edit {part!r}; write J=VALUE, J*FACTOR or J+DELTA, e.g. 3=max")
        try:
            j = int(j.strip().lstrip("pP"))
        except ValueError:
            raise UsageError(f"edit {part!r}: the prototype must be an integer id") from None
        if not 0 <= j < num_prototypes:
            raise UsageError(f"edit {part!r}: prototype {j} out of range 0 ... {num_prototypes - 1}")
        ops.append(EditOp(j, mode, v.strip()))
    if not ops:
        raise UsageError("empty edit; write e.g. --edit 3=max")
    return ops


def resolve_op(op: EditOp, ref: Reference | None) -> float:
    """The number of one operation: the target of a set (see :func:`resolve_value`), else the factor or delta."""
    if op.mode == "set":
        return resolve_value(op.value, op.prototype, ref)
    try:
        return float(op.value)
    except ValueError:
        what = "factor" if op.mode == "scale" else "shift"
        raise UsageError(f"edit {op}: the {what} must be a number, e.g. {op.prototype}"
                         f"{'*1.5' if op.mode == 'scale' else '+0.5'}") from None


def apply_ops(s: torch.Tensor, ops: Sequence[EditOp], ref: Reference | None) -> torch.Tensor:
    """s' = s with every operation applied in order (values resolved per prototype)."""
    out = s
    for op in ops:
        out = edit_s(out, [op.prototype], resolve_op(op, ref), op.mode)
    return out


def faithfulness_summary(rise: torch.Tensor, others: torch.Tensor, off: torch.Tensor | None = None,
                         baseline: str = "x0") -> dict:
    """True medians (with counts) and per-image values of a set of edits: :func:`.measures.summarise_edit`."""
    return summarise_edit(rise, others, off, baseline)


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation of two noise tensors (flattened per row):

    slerp = [sin((1-alpha) theta) a + sin(alpha theta) b] / sin theta,  cos theta = <a, b> / (|a| |b|);
    exact endpoints at alpha = 0 and 1; falls back to lerp when a and b are (anti)parallel.
    """
    if alpha == 0.0:
        return a.clone()
    if alpha == 1.0:
        return b.clone()
    af, bf = a.flatten(1).double(), b.flatten(1).double()
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1, 1))[:, None]
    sin = torch.sin(theta)
    lerp = (1 - alpha) * af + alpha * bf
    sl = (torch.sin((1 - alpha) * theta) * af + torch.sin(alpha * theta) * bf) / sin.clamp_min(1e-12)
    out = torch.where(sin > 1e-6, sl, lerp)
    return out.to(a.dtype).reshape(a.shape)


def lerp_s(s_a: torch.Tensor, s_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) s_A + alpha s_B, with exact endpoints (no rounding at alpha = 0 or 1)."""
    a = float(alpha)
    return s_a.clone() if a == 0 else s_b.clone() if a == 1 else (1 - a) * s_a + a * s_b
