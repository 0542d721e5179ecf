"""What :func:`~.fid.fid_kid` returns: FID and KID of a set of images, with how they were measured.

    res = fid_kid(images, data_cfg)
    res                      # FIDResult(FID 41.20, KID 12.31e-3 +- 1.02e-3, N=1000 vs 2000 fashion-mnist test)
    res.fid, res.kid, res.kid_interval, res.n_generated, res.n_reference, res.protocol
    print(res.summary()); res.write("results/fid")     # -> fid.json (atomically)

FID is a distance between Gaussian fits of the two sets' features and has no interval of its own here (it is biased
upwards at small N: compare FIDs only at equal N and reference set). KID is the mean of the unbiased MMD^2 over
``subsets`` random subsets; its interval is that mean +- one standard deviation over the subsets (how much the
estimate moves between subsets of the same images, not a confidence interval for the population KID).

It is a plain typed result (evaluation sits below the analyses' figure convention): a one-line repr, ``summary()``,
``to_json()`` (the numbers ``fid.json`` holds) and ``write(out)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..utils.io import write_json
from ..utils.text import one_line

__all__ = ["FIDResult", "protocol_line"]


@dataclass
class FIDResult:
    """FID and KID of ``n_generated`` images against ``n_reference`` reference images; ``protocol`` holds the
    caller's description (sampler, steps, weights, ...) merged with the metric's own (network, preprocessing,
    reference split and count, cache file, small-N flag)."""

    fid: float
    kid: float
    kid_std: float  # std of the MMD^2 over the KID subsets
    n_generated: int
    n_reference: int
    protocol: dict = field(default_factory=dict)

    @property
    def kid_interval(self) -> tuple[float, float]:
        """(KID - std, KID + std): the spread of the KID estimate over its random subsets."""
        return self.kid - self.kid_std, self.kid + self.kid_std

    @property
    def small_n(self) -> bool:
        """True when either set has fewer than 10,000 images (FID then reads high; compare only at equal N)."""
        return bool(self.protocol.get("small_n", min(self.n_generated, self.n_reference) < 10_000))

    @property
    def protocol_line(self) -> str:
        """One line that states the numbers and how they were measured (:func:`protocol_line`)."""
        return protocol_line(self)

    def __repr__(self) -> str:
        ref = self.protocol.get("reference", {})
        against = " ".join(str(v) for v in (ref.get("dataset"), ref.get("split")) if v)
        return one_line(f"FIDResult(FID {self.fid:.2f}, KID {self.kid * 1e3:.2f}e-3 +- {self.kid_std * 1e3:.2f}e-3, "
                        f"N={self.n_generated} vs {self.n_reference}{' ' + against if against else ''}"
                        f"{', small-N' if self.small_n else ''})")

    def summary(self) -> str:
        """The protocol line, the KID interval and, at small N, the warning about comparing FIDs."""
        lo, hi = self.kid_interval
        lines = [self.protocol_line, f"KID interval (+- one std over subsets): [{lo * 1e3:.2f}e-3, {hi * 1e3:.2f}e-3]"]
        if self.small_n:
            lines.append(self.protocol.get("note", "FID is biased upwards at small N: compare FIDs only at equal N."))
        return "\n".join(lines)

    def to_json(self) -> dict:
        """fid, kid, kid_std, n_generated, n_reference and protocol, in that order (JSON-able numbers)."""
        return {"fid": self.fid, "kid": self.kid, "kid_std": self.kid_std, "n_generated": self.n_generated,
                "n_reference": self.n_reference, "protocol": self.protocol}

    def write(self, out: str | Path) -> dict[str, Path]:
        """``out/fid.json``: :meth:`to_json` plus the protocol line, written atomically."""
        path = Path(out) / "fid.json"
        write_json(path, {**self.to_json(), "protocol_line": self.protocol_line})
        return {"result": path}


def protocol_line(res: FIDResult | dict) -> str:
    """One line that states how a FID was measured (of a :class:`FIDResult` or its :meth:`~FIDResult.to_json`)."""
    res = res.to_json() if isinstance(res, FIDResult) else res
    p = res["protocol"]
    ref = p["reference"]
    parts = [f"FID {res['fid']:.2f}", f"KID {res['kid'] * 1e3:.2f}e-3 +- {res['kid_std'] * 1e3:.2f}e-3",
             f"N={res['n_generated']} {'real' if str(p.get('mode', '')).startswith('real') else 'generated'}",
             f"vs {ref['n']} {ref['dataset']} {ref['split']} images"]
    for k in ("mode", "sampler", "steps", "weights", "seed", "images_seen"):
        if p.get(k) is not None:
            parts.append(f"{k}={p[k]}")
    if p.get("small_n"):
        parts.append("small-N")
    return "; ".join(parts)
