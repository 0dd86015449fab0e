"""The success plots of `dynaflip results` (docs/results.md): pooled success per condition (our
task) or per task (MetaWorld), one bar per encoder recipe, Wilson 95 % error bars.

Eleven recipes side by side make 77 bars per figure and more recipes than a colour cycle has
colours, so the figure has up to two panels, each with the control recipe (DynaFLIP) as its first
bar: DynaFLIP against the other methods (`Recipe.kind` "baseline"), and DynaFLIP against its
ablations ("ablation"). A panel is drawn only when it has a recipe besides the control; a recipe
name outside `encoder.recipes.RECIPES` is drawn with the baselines. Within a panel every recipe
keeps one colour; the control is the first colour of the cycle in both.

Matplotlib (Agg backend) is imported only when a plot is written; the PNG carries no software or
date metadata, so the same result files give the same bytes.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from dynaflip_ros.data.dataset_io import atomic_write_bytes
from dynaflip_ros.encoder.recipes import RECIPES

PANEL_TITLES = {"baseline": "DynaFLIP and the baselines", "ablation": "DynaFLIP and its ablations"}


def plotted_recipes(summary: dict[str, Any]) -> list[str]:
    """The recipes of a results summary with at least one episode (the plot's bars), in the
    summary's order."""
    return [r for r, rec in summary["recipes"].items() if any(s["n"] for s in rec["conditions"].values())]


def plot_panels(recipes: list[str], control: str) -> list[tuple[str, list[str]]]:
    """[(panel kind, recipes in it)] for the plotted recipes: ("baseline", [control, baselines...])
    and ("ablation", [control, ablations...]), each only when it has a recipe besides the control,
    orders kept; [("baseline", [control])] when the control is the only recipe. A recipe unknown to
    RECIPES counts as a baseline; the control is listed only when it is among `recipes`."""
    head = [control] if control in recipes else []
    others = [r for r in recipes if r != control]
    panels = [(kind, head + [r for r in others if (RECIPES[r].kind if r in RECIPES else "baseline") == kind])
              for kind in ("baseline", "ablation")]
    drawn = [(kind, rs) for kind, rs in panels if len(rs) > len(head)]
    return drawn or [("baseline", head)]


def plot_link(doc_path: str | Path, img_dir: str | Path, name: str) -> str:
    """The plot's path relative to the document's folder (the Markdown image link)."""
    return os.path.relpath(Path(img_dir) / name, Path(doc_path).parent)


def write_plot(summary: dict[str, Any], path: str | Path, title: str, control: str) -> bool:
    """Write the success plot of `summary` (a `results.summarize_*` dict: "conditions" and
    "recipes" -> condition -> {n, success_rate, ci_low, ci_high}) to `path` (PNG, atomically).
    Returns False (nothing written) without any episode."""
    recipes = plotted_recipes(summary)
    if not recipes:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = summary["conditions"]
    panels = plot_panels(recipes, control)
    width_in = max(7.0, 1.2 * len(conditions) + 0.25 * max(len(rs) for _, rs in panels) * len(conditions) ** 0.5)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 0.5 + 4.0 * len(panels)), squeeze=False)
    for ax, (kind, rs) in zip(axes[:, 0], panels):
        width = 0.8 / len(rs)
        for k, r in enumerate(rs):
            rows = [(i, s) for i, c in enumerate(conditions) if (s := summary["recipes"][r]["conditions"].get(c)) and s["n"]]
            ax.bar([i + (k - (len(rs) - 1) / 2) * width for i, _ in rows], [s["success_rate"] for _, s in rows], width,
                   yerr=[[s["success_rate"] - s["ci_low"] for _, s in rows],
                         [s["ci_high"] - s["success_rate"] for _, s in rows]],
                   capsize=2, label=r, color=f"C{k}")
        ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success (pooled, Wilson 95 %)")
        ax.set_title(f"{title}: {PANEL_TITLES[kind]}" if len(rs) > 1 else title)
        ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
