"""The pictures: image grids, the confusion matrix and the robustness curve.

matplotlib's object API (no pyplot state), a fixed size per cell and no tight bounding box, so
a picture's pixel size follows from its layout alone (`grid_size`), which the tests check.
Each PNG is written to a temporary name and moved into place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from common.io import atomic_save_figure

DPI = 80
CELL_W, CELL_H = 1.3, 1.6  # inches per grid cell: the image and a two-line title
TITLE_IN = 0.32  # of which the title takes this much
SUPTITLE_IN = 0.35  # a grid's own title, above the cells
# Titles and labels hold class and folder names: plain text, so a `$` is a dollar sign, not
# matplotlib math (an unbalanced `$\frac{x$` would raise), and no LaTeX runs.
PLAIN = {"parse_math": False, "usetex": False}


@dataclass
class Cell:
    """One picture of a grid: an (H, W) map or a (C, H, W) image, its title, and whether to mark it."""

    image: torch.Tensor | np.ndarray | None
    title: str = ""
    marked: bool = False
    cmap: str | None = None


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 or [0, 1] float -> what imshow wants: (H, W) grey or (H, W, 3) colour in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    array = np.asarray(image, dtype=float)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    return np.clip(array, 0.0, 1.0)


def scaled(array: torch.Tensor) -> torch.Tensor:
    """Stretch to [0, 1] by its own minimum and maximum (a constant array becomes 0)."""
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if high > low else torch.zeros_like(array)


def grid_size(rows: int, cols: int, titled: bool = True) -> tuple[int, int]:
    """The PNG's (width, height) in pixels for a grid of rows x cols cells (and a title above)."""
    return round(cols * CELL_W * DPI), round((rows * CELL_H + (SUPTITLE_IN if titled else 0.0)) * DPI)


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, dpi=DPI)
    return path


def image_grid(cells: list[Cell], cols: int, path: Path, title: str = "", row_labels: list[str] | None = None) -> Path:
    """Cells left to right, top to bottom; marked cells get a red title and frame."""
    rows = max(1, -(-len(cells) // cols))
    title_in = SUPTITLE_IN if title else 0.0
    width, height = cols * CELL_W, rows * CELL_H + title_in
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(cells) or cells[k].image is None:  # a blank cell pads a short row
            ax.set_axis_off()
            continue
        cell = cells[k]
        shown = to_display(cell.image) if cell.cmap is None else cell.image
        ax.imshow(shown, cmap=cell.cmap or ("gray" if np.ndim(shown) == 2 else None), vmin=0.0, vmax=1.0)
        colour = "red" if cell.marked else "black"
        ax.set_title(cell.title, fontsize=7, color=colour, pad=2, **PLAIN)
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5 if cell.marked else 0.5)
    if row_labels:
        for ax, label in zip(axes[:, 0], row_labels):
            ax.set_ylabel(label, fontsize=7, **PLAIN)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.08 / height, **PLAIN)
    fig.subplots_adjust(left=0.02 if not row_labels else 0.06, right=0.98, bottom=0.02,
                        top=1 - (title_in + TITLE_IN) / height, wspace=0.08, hspace=TITLE_IN / (CELL_H - TITLE_IN) + 0.05)
    return save(fig, path)


def confusion_figure(matrix: np.ndarray, names: list[str], path: Path, title: str) -> Path:
    """A row-normalised confusion matrix with every class's name on both axes."""
    return save(confusion_plot(matrix, names, title), path)


def confusion_plot(matrix: np.ndarray, names: list[str], title: str) -> Figure:
    """The figure `confusion_figure` saves. Every row and column is named (never a rank position,
    which says nothing once the classes are sorted by accuracy); past 40 classes the picture grows
    to 16 inches and the names shrink to fit a row (100 classes: about 5 pt)."""
    side = float(np.clip(0.3 * len(names) + 2.0, 5.0, 12.0 if len(names) <= 40 else 16.0))
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    row_pt = side * 72 * 0.75 / max(len(names), 1)  # the axes take about 3/4 of the side
    fontsize = 7.0 if len(names) <= 40 else float(np.clip(0.6 * row_pt, 3.0, 7.0))
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=fontsize, **PLAIN)
    ax.set_yticks(range(len(names)), names, fontsize=fontsize, **PLAIN)
    if len(names) <= 12:
        for (t, p), value in np.ndenumerate(matrix):
            if value >= 0.005:
                ax.text(p, t, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, **PLAIN)
    fig.subplots_adjust(left=0.15, right=0.9, bottom=0.15, top=0.93)
    return fig


def robustness_figure(epsilons: list[float], accuracy: list[float], path: Path, title: str) -> Path:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot([e * 255 for e in epsilons], accuracy, marker="o")
    for e, a in zip(epsilons, accuracy):
        ax.annotate(f"{a:.1f}", (e * 255, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set(xlabel="epsilon (x 1/255 of the pixel range)", ylabel="accuracy (%)", ylim=(0, 105))
    ax.set_title(title, **PLAIN)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.9)
    return save(fig, path)
