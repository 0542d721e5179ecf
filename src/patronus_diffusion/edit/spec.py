"""Edit specs: what an edit does to s, written as text (``"3=max,5=0,7*1.5,2+0.5"``) or as operations.

An edit changes s = f(x0) of every image and nothing else; the decoded image then differs from the
reconstruction by what the edited prototypes stand for. Each operation sets (``J=VALUE``), scales (``J*FACTOR``)
or shifts (``J+DELTA``) one entry s_J; a set value is a number, ``max`` (= max(s_X) over the reference set X,
:mod:`.reference`), a multiple of it (``1.5max``, ``0.5*max``) or a quantile of s_J over X (``q0.9``).

A spec may end in ``@LO:HI``, a timed edit (``"3=max,5=0@0.5:1"``): the edited s conditions only the sampling
steps whose timestep t has LO <= t/T < HI (fractions of the schedule, 1 = pure noise; :func:`split_window`), the
unedited s every other step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..diffusion.schedule import check_window
from ..utils.errors import UsageError
from .reference import Reference


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


def split_window(spec: str) -> tuple[str, tuple[float, float] | None]:
    """``"3=max,5=0@0.5:1"`` -> (``"3=max,5=0"``, (0.5, 1.0)); a spec without ``@`` has no window (None)."""
    if "@" not in spec:
        return spec, None
    ops, text = spec.rsplit("@", 1)
    lo, sep, hi = text.partition(":")
    try:
        numbers = (float(lo), float(hi)) if sep else None
    except ValueError:
        numbers = None
    if numbers is None:
        raise UsageError(f"cannot read the window {'@' + text!r} of edit {spec!r}; write @LO:HI with 0 <= LO <= HI "
                         f"<= 1, fractions of the schedule (1 = pure noise), e.g. 3=max@0.5:1")
    try:
        return ops, check_window(numbers)
    except UsageError as e:
        raise UsageError(f"edit {spec!r}: {e}") from None


def parse_edit(spec: str, num_prototypes: int) -> list[EditOp]:
    """Parse ``"3=max,5=0,7*1.5,2+0.5"`` into edit operations (all applied together); a window ``@LO:HI`` at the
    end is checked and left to :func:`split_window`."""
    ops = []
    spec, _ = split_window(spec)
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
