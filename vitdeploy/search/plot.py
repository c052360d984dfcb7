"""OUT.png: fidelity against measured latency, references and the choice marked (matplotlib via
vitdeploy.optional, so the search runs without it: the plot is then skipped with a warning)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from vitdeploy.search.evolution import pareto_front
from vitdeploy.search.space import Genes, SearchSpace


def plot_search(path: Path, history: Dict, refs: Dict[str, Genes], chosen: Genes, space: SearchSpace,
                limit_ms: Optional[float], dense_ms: float, title: str = "") -> bool:
    """Returns False (nothing written) where matplotlib is not installed. ``limit_ms``: the latency
    budget as measured (a vertical line), None for a MACs budget (not a latency)."""
    import io

    from vitdeploy import optional
    from vitdeploy.fileio import atomic_write_bytes

    if not optional.available("matplotlib"):
        return False
    plt = optional.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cands = list(history.values())
    # predictions as fractions of dense, on the measured dense's scale (the table was timed earlier)
    scale = dense_ms / history[space.dense()].predicted_ms
    ax.scatter([c.predicted_ms * scale for c in cands], [c.fidelity.score for c in cands], s=8, c="0.75",
               label="evaluated (predicted latency)")
    meas = [c for c in cands if c.measured_ms is not None]
    front = sorted((meas[i] for i in pareto_front([(c.measured_ms, c.fidelity.score) for c in meas])),
                   key=lambda c: c.measured_ms)
    ax.plot([c.measured_ms for c in front], [c.fidelity.score for c in front], "-", c="tab:blue", lw=1,
            label="measured front")
    names = {g: n for n, g in refs.items()}
    uni = [history[g] for n, g in refs.items() if n.startswith("uniform") and history[g].measured_ms is not None]
    ax.plot([c.measured_ms for c in uni], [c.fidelity.score for c in uni], "s--", c="tab:orange", ms=5,
            label="uniform ratio")
    for c in uni:
        ax.annotate(names[c.genes].split()[-1], (c.measured_ms, c.fidelity.score), fontsize=7,
                    xytext=(3, -9), textcoords="offset points")
    for n, g in refs.items():
        c = history[g]
        if n.startswith("cfg") and c.measured_ms is not None:
            ax.scatter([c.measured_ms], [c.fidelity.score], marker="^", s=60, c="tab:green",
                       label="presets" if n == "cfg1" else None)
            ax.annotate(n, (c.measured_ms, c.fidelity.score), fontsize=8, xytext=(4, 4), textcoords="offset points")
    d = history[space.dense()]
    ax.scatter([d.measured_ms], [d.fidelity.score], marker="D", s=50, c="k", label="dense")
    searched = [c for c in meas if c.genes not in names]
    ax.scatter([c.measured_ms for c in searched], [c.fidelity.score for c in searched], s=25, c="tab:blue",
               label="searched (measured)")
    ch = history[chosen]
    ax.scatter([ch.measured_ms], [ch.fidelity.score], marker="*", s=260, c="tab:red", zorder=5, label="chosen")
    if limit_ms is not None:
        ax.axvline(limit_ms, ls=":", c="tab:red", lw=1, label=f"budget {limit_ms:.1f} ms")
    ax.set_xlabel("latency, ms (measured end to end; grey: predicted)")
    ax.set_ylabel(f"fidelity ({ch.fidelity.details.get('metric', 'score')})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
