"""Drawing helpers shared by the explanation commands: labelled image panels with red boxes.

Every figure is a grid of :class:`Panel` cells drawn with matplotlib's object API (a ``Figure`` on its own Agg
canvas: no pyplot, so importing or calling this never changes the process's matplotlib backend) and saved as a
lossless PNG. Images are shown pixel for pixel (nearest-neighbour upscaling, never smoothed); grey
images in grey, colour images in colour; a box (x0, y0, x1, y1) is end-exclusive in image pixels, as
returned by :meth:`ReceptiveField.box`, and is drawn on the pixel edges it covers.

For files that must keep exact pixels (no axes), :func:`boxed_uint8` burns a box into an upscaled
uint8 copy of an image.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..utils.images import to_uint8
from ..utils.io import atomic_path

Box = tuple[int, int, int, int]
BOX_COLOUR = "red"


@dataclass
class Panel:
    """One cell of a figure: an image in [-1, 1] (C, H, W), an optional title, box and heat map.

    ``heat`` (H, W) is drawn semi-transparently over the image (``jet``), e.g. an upsampled similarity map.
    ``image=None`` leaves the cell blank (but still shows ``title``, if any).
    """

    image: torch.Tensor | None
    title: str = ""
    box: Box | None = None
    heat: np.ndarray | None = None
    highlight: bool = False


def image_array(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> uint8 (H, W) for grey or (H, W, 3) for colour, by the fixed map of ``to_uint8``."""
    arr = to_uint8(img[None])[0]
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def short_name(name: str) -> str:
    """An image name short enough for a panel title (the end is kept: it holds the index or file name)."""
    return name if len(name) <= 14 else "..." + name[-11:]


def crop(img: torch.Tensor, box: Box) -> torch.Tensor:
    """The pixels inside an end-exclusive box of a (C, H, W) image."""
    x0, y0, x1, y1 = box
    return img[:, y0:y1, x0:x1]


def boxed_uint8(img: torch.Tensor, box: Box | None, upscale: int = 4, width: int = 1,
                colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """An RGB uint8 copy of ``img`` upscaled ``upscale`` times (nearest) with ``box`` burnt in.

    The box is drawn on the outermost pixels *inside* the boxed region at the upscaled resolution,
    so it never covers image content outside the box.
    """
    arr = image_array(img)
    rgb = np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr.copy()
    rgb = rgb.repeat(upscale, 0).repeat(upscale, 1)
    if box is not None:
        x0, y0, x1, y1 = (v * upscale for v in box)
        c = np.array(colour, np.uint8)
        rgb[y0:y0 + width, x0:x1] = c
        rgb[y1 - width:y1, x0:x1] = c
        rgb[y0:y1, x0:x0 + width] = c
        rgb[y0:y1, x1 - width:x1] = c
    return rgb


def _draw(ax, panel: Panel, fontsize: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(panel.highlight)
        if panel.highlight:
            side.set_color("gold")
            side.set_linewidth(3)
    if panel.title:
        ax.set_title(panel.title, fontsize=fontsize, pad=2)
    if panel.image is None:
        if not panel.highlight:
            ax.axis("off")
        return
    arr = image_array(panel.image)
    if arr.ndim == 2:
        ax.imshow(arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(arr, interpolation="nearest")
    if panel.heat is not None:
        ax.imshow(panel.heat, cmap="jet", alpha=0.45, interpolation="nearest")
    if panel.box is not None:
        x0, y0, x1, y1 = panel.box
        lw = max(1.0, 2.0 * 16 / max(arr.shape[0], 16)) if arr.shape[0] < 64 else 1.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=BOX_COLOUR,
                               linewidth=lw))


def save_panels(rows: Sequence[Sequence[Panel]], path: str | Path, row_labels: Sequence[str] | None = None,
                title: str | None = None, cell: float = 1.35, fontsize: float = 7.0, dpi: int = 110,
                plot: Callable | None = None, plot_height: float = 2.6) -> Path:
    """Draw a grid of panels (ragged rows are padded with blanks) and save it as a PNG (:func:`panels_figure`)."""
    return save_figure(panels_figure(rows, row_labels, title, cell, fontsize, plot, plot_height), path, dpi)


def panels_figure(rows: Sequence[Sequence[Panel]], row_labels: Sequence[str] | None = None, title: str | None = None,
                  cell: float = 1.35, fontsize: float = 7.0, plot: Callable | None = None,
                  plot_height: float = 2.6) -> Figure:
    """A grid of panels as a matplotlib ``Figure`` (ragged rows are padded with blanks).

    Layout is explicit, in inches: every image gets a ``cell`` x ``cell`` square, every row reserves
    room for its longest panel title, the figure title is wrapped to the figure width. ``plot(ax)``, if
    given, draws a chart in a ``plot_height``-inch strip below the panels.
    """
    if not rows:
        raise ValueError("nothing to draw: no panels")
    ncol = max((len(r) for r in rows), default=1)
    line_in = fontsize / 72 * 1.25
    left = 1.0 if row_labels else 0.05
    gap = 0.06
    width = left + ncol * (cell + gap) + 0.05
    if plot is not None:
        width = max(width, 6.0)
    if title:
        chars = max(int(width * 72 / ((fontsize + 2) * 0.62)), 20)
        title = "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))
    top = ((title.count("\n") + 1) * (fontsize + 2) / 72 * 1.3 + 0.12) if title else 0.05
    heads = [max((p.title.count("\n") + 1 if p.title else 0) for p in row) * line_in + 0.04 if row else 0.04
             for row in rows]
    height = top + sum(cell + h + gap for h in heads) + 0.05
    below = plot_height + 0.55 if plot is not None else 0.0
    height += below
    fig = new_figure(figsize=(width, height))
    if plot is not None:
        x0 = max(left, 0.6)
        plot(fig.add_axes([x0 / width, 0.45 / height, (width - x0 - 0.2) / width, (plot_height - 0.1) / height]))
    y = height - top
    for r, row in enumerate(rows):
        y -= heads[r] + cell
        for c in range(ncol):
            ax = fig.add_axes([(left + c * (cell + gap)) / width, y / height, cell / width, cell / height])
            if c < len(row):
                _draw(ax, row[c], fontsize)
            else:
                ax.axis("off")
        if row_labels is not None and r < len(row_labels):
            fig.text((left - 0.08) / width, (y + cell / 2) / height, row_labels[r], ha="right", va="center",
                     fontsize=fontsize + 1)
        y -= gap
    if title:
        fig.text(0.5, 1 - 0.06 / height, title, ha="center", va="top", fontsize=fontsize + 2)
    return fig


def new_figure(**kwargs) -> Figure:
    """A matplotlib ``Figure`` on its own Agg canvas (``kwargs``: figsize, dpi, ...): drawn and saved without
    pyplot, so neither the process's backend nor a notebook's open figures are touched."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_image(fig, dpi: int = 110):
    """A matplotlib figure as a PIL image (RGBA), e.g. for a result's ``to_pil()``."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as img:
        return img.copy()


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def band_plot(t: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
              ylabel: str, ax_titles: Sequence[str] | None = None,
              more: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]] = ()) -> Path:
    """:func:`band_figure` saved as a PNG at ``path``."""
    return save_figure(band_figure(t, curves, title, ylabel, ax_titles, more), path)


def band_figure(t: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylabel: str,
                ax_titles: Sequence[str] | None = None,
                more: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]] = ()) -> Figure:
    """Mean +- std curves against the diffusion timestep t, drawn from t = T (left) to t = 0 (right).

    ``curves`` maps a label to (mean, std) arrays aligned with ``t``; ``more`` adds further subplots
    sharing the x axis (titles from ``ax_titles``).
    """
    groups = [curves, *more]
    fig = new_figure(figsize=(5.2 * len(groups), 3.6))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for k, (ax, group) in enumerate(zip(axes[0], groups)):
        for label, (mean, std) in group.items():
            line, = ax.plot(t, mean, label=label, linewidth=1.6)
            ax.fill_between(t, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlim(max(t.max(), 1), 0)
        ax.set_xlabel("timestep t (generation runs left to right)")
        ax.set_ylabel(ylabel)
        if ax_titles and k < len(ax_titles):
            ax.set_title(ax_titles[k], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
