"""The figure of a :class:`~.report.ModelReport` (its ``to_pil()``, ``report.png``): the report's own pictures,
composed with matplotlib's object API (no pyplot, no backend switch: :func:`~.figures.new_figure`).

* top, a summary panel over every prototype J: the median rise of the edit s_J -> its own max (1 = the requested
  change happened) and the median off-target change, with dead or redundant prototypes' labels in red;
* below, the cards of the first :data:`MAX_CARDS` prototypes, one row each, from the pictures the HTML page shows:
  nearest training patches, the edit strip (input, reconstruction, s_J raised at each strength), the histogram of
  s_J and its emergence curve (index.html has every card).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from .figures import new_figure

MAX_CARDS = 6
"""Prototype cards drawn in the figure (the page shows them all)."""

CARD_PICTURES = (("img_patches", "nearest training patches"), ("img_strip", "edit strip: input, recon, edits"),
                 ("img_hist", "s_J over test images"), ("img_when", "emergence (t = T ... 0)"))
FLAG_COLOUR = "#c0392b"


def uri_array(uri: str) -> np.ndarray | None:
    """The pixels of a PNG data URI (``data:image/png;base64,...``) as an array, or None for an empty one."""
    from PIL import Image

    if not uri or "," not in uri:
        return None
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        return np.asarray(img.convert("RGBA"))


def is_flagged(card: dict) -> bool:
    """A prototype card is flagged when the prototype is dead or redundant with another one."""
    return bool(card.get("dead") or card.get("redundant_with"))


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def _summary_panel(ax, cards: list[dict]) -> None:
    """Median rise and off-target change per prototype; flagged prototypes' labels in red."""
    j = np.arange(len(cards))
    ax.bar(j - 0.2, [_number(c["rise"]) for c in cards], 0.4, color="#2f6fdf", label="rise (1 = as asked)")
    ax.bar(j + 0.2, [_number(c["off_target"]) for c in cards], 0.4, color="#e08a2c", label="off-target change")
    ax.axhline(1.0, color="#999", linewidth=0.7, linestyle=":")
    ax.axhline(0.0, color="#999", linewidth=0.6)
    ax.set_xticks(j, [f"p{c['prototype']}" for c in cards], fontsize=6 if len(cards) <= 40 else 4,
                  rotation=0 if len(cards) <= 20 else 90)
    for label, card in zip(ax.get_xticklabels(), cards):
        if is_flagged(card):
            label.set_color(FLAG_COLOUR)
    ax.set_ylabel("median over images", fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    ax.legend(fontsize=6, loc="upper right")


def _card_row(axes, card: dict) -> None:
    """One prototype's pictures, side by side, titled with its rise and flags."""
    flags = (["dead"] if card.get("dead") else []) + (
        ["redundant with " + ", ".join(f"p{k}" for k in card["redundant_with"])] if card.get("redundant_with") else [])
    rise = "n/a" if card["rise"] is None else f"{card['rise']:.2f}"
    for ax, (key, what) in zip(axes, CARD_PICTURES):
        ax.axis("off")
        pixels = uri_array(card.get(key, ""))
        if pixels is None:
            ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", fontsize=6, color="#777")
        else:
            ax.imshow(pixels, interpolation="nearest")
        ax.set_title(what, fontsize=6)
    axes[0].text(-0.05, 0.5, f"p{card['prototype']}\nrise {rise}" + ("\n" + "; ".join(flags) if flags else ""),
                 transform=axes[0].transAxes, ha="right", va="center", fontsize=7,
                 color=FLAG_COLOUR if flags else "black")


def report_figure(rep, max_cards: int = MAX_CARDS):
    """The summary panel over every prototype and the first ``max_cards`` prototype cards (module docstring)."""
    cards = rep.prototypes
    shown = cards[:max_cards]
    height = 2.6 + 1.5 * len(shown)
    fig = new_figure(figsize=(12, height), dpi=100)
    grid = fig.add_gridspec(1 + len(shown), len(CARD_PICTURES), height_ratios=[1.8] + [1.0] * len(shown),
                            width_ratios=[1.0, 1.5, 1.3, 1.3], left=0.12, right=0.99, top=1 - 0.45 / height,
                            bottom=0.1 / height, hspace=0.45, wspace=0.06)
    _summary_panel(fig.add_subplot(grid[0, :]), cards)
    for r, card in enumerate(shown):
        _card_row([fig.add_subplot(grid[1 + r, c]) for c in range(len(CARD_PICTURES))], card)
    c = rep.card
    more = f"; cards of the first {len(shown)} of {len(cards)} prototypes (index.html has all)" \
        if len(shown) < len(cards) else ""
    fig.suptitle(f"{Path(str(c.get('run', ''))).name}: {c.get('prototypes')} prototypes, {c.get('dataset')} {c.get('image')}; "
                 f"reconstruction {c.get('reconstruction', {}).get('psnr_db')} dB{more}", fontsize=8)
    return fig
