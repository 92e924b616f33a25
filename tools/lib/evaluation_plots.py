"""The evaluation's figures as PNG files (matplotlib, Agg backend: no display needed).

One figure per retrieval direction for precision@k and, where binary codes were ranked, one for
precision against recall over Hamming radii; every figure carries its baselines and the chance
level. A bar chart shows caption-half recall@k of each text representation.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, on machines without a display too
import matplotlib.pyplot as plt  # noqa: E402

_DPI = 120
_CHANCE_STYLE = {"color": "black", "linestyle": ":", "linewidth": 1.2}


def _style(role: str) -> dict:
    # The features under test in solid lines, the baselines dashed.
    return {"linestyle": "-" if role == "features" else "--", "marker": "o", "markersize": 3}


def _axes(width: float, height: float):
    """A figure with room on the right for the legend, and 20 distinct colours (10 repeat soon)."""
    figure, axes = plt.subplots(figsize=(width, height))
    axes.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    return figure, axes


def _legend(axes) -> None:
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _save(figure, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


def _file_name(direction: str) -> str:
    return direction.replace("->", "_to_")


def precision_figure(direction: str, tasks: list, base_rate: float, directory: str) -> str:
    """Precision@k of each task of one direction, with chance; returns the file written."""
    figure, axes = _axes(9.5, 4.5)
    for task in tasks:
        ks = list(task.result.precision_at)
        axes.plot(ks, list(task.result.precision_at.values()), label=task.name, **_style(task.role))
    axes.axhline(base_rate, label=f"chance ({base_rate:.3f})", **_CHANCE_STYLE)
    axes.set(
        xlabel="k (top-k retrieved)",
        ylabel="precision@k",
        title=f"{direction}: precision@k, relevant = shares a label",
        ylim=(0, 1),
    )
    axes.grid(alpha=0.3)
    _legend(axes)
    return _save(figure, os.path.join(directory, f"precision_at_k_{_file_name(direction)}.png"))


def pr_figure(direction: str, tasks: list, base_rate: float, directory: str) -> str | None:
    """Precision against recall over Hamming radii for the code tasks of one direction."""
    code_tasks = [task for task in tasks if task.result.pr_curve is not None]
    if not code_tasks:
        return None
    figure, axes = _axes(8.5, 5)
    for task in code_tasks:
        curve = task.result.pr_curve
        axes.plot(curve.recall, curve.precision, label=task.name, **_style(task.role))
    axes.axhline(base_rate, label=f"chance ({base_rate:.3f})", **_CHANCE_STYLE)
    axes.set(
        xlabel="recall",
        ylabel="precision",
        title=f"{direction}: Hamming radius 0..bits",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axes.grid(alpha=0.3)
    _legend(axes)
    return _save(figure, os.path.join(directory, f"pr_curve_{_file_name(direction)}.png"))


def caption_halves_figure(recall: dict[str, dict[int, float]], images: int, directory: str) -> str:
    """Grouped bars: recall@k of each representation (chance included)."""
    names = list(recall)
    ks = list(next(iter(recall.values())))
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        positions = [index + offset * width for index in range(len(ks))]
        bars = axes.bar(positions, [recall[name][k] for k in ks], width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize="x-small")
    axes.set_xticks([index + width * (len(names) - 1) / 2 for index in range(len(ks))], [f"R@{k}" for k in ks])
    axes.set(ylabel="recall", ylim=(0, 1.05), title=f"caption halves: one half finds the other, {images:,} images")
    axes.legend(fontsize="small")
    return _save(figure, os.path.join(directory, "caption_halves.png"))
