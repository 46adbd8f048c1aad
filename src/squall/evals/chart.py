"""The eval's PNG chart: grouped bars of accuracy, one bar per model.

matplotlib is an extra (`squall[eval]`); it is imported only when a chart is drawn, with the
non-interactive Agg backend so no window or display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import MissingExtraError

Panels = Mapping[str, Mapping[str, Sequence[float]]]
"""Panel title -> model -> one value (0..1) per category."""


CHART_HINT = 'pip install "squall[eval]"'
"""How to get the chart when matplotlib is missing."""


def have_matplotlib() -> bool:
    """Return True when matplotlib can be imported, so the chart can be drawn."""
    try:
        require_matplotlib()
    except MissingExtraError:
        return False
    return True


def require_matplotlib() -> None:
    """Return if matplotlib can be imported; call it before a run, so a missing extra costs nothing.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401  # a broken install fails here, before any request
    except ImportError:
        raise MissingExtraError("The eval chart", "eval", "matplotlib") from None


def write_bar_chart(path: Path, *, title: str, categories: Sequence[str], panels: Panels) -> Path:
    """Return `path`, after drawing one panel per entry of `panels` into it as a PNG.

    Each panel groups its bars by category, one bar per model.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    titles = list(panels)
    fig, axes = plt.subplots(
        1, len(titles), figsize=(max(5.0, 1.6 * len(categories)) * len(titles), 4.2), squeeze=False
    )
    try:
        for ax, panel in zip(axes[0], titles, strict=True):
            series = panels[panel]
            width = 0.8 / max(1, len(series))
            for i, (model, values) in enumerate(series.items()):
                xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
                bars = ax.bar(xs, [v * 100 for v in values], width, label=model)
                ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
            ax.set_xticks(range(len(categories)), list(categories))
            ax.set_ylim(0, 108)
            ax.set_ylabel("accuracy (%)")
            ax.set_title(panel)
        # One legend under the panels: inside them it would cover bars near 100%.
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
