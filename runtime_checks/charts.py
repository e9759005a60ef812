"""Pictures of a profile and its plans (needs the ``charts`` extra: matplotlib).

``save_chart(prof, "plan.svg", chosen=plan, heuristics=[...])`` draws, left,
per-region bars of the bytes checkpointing frees against the recompute
milliseconds and, right, the memory/time Pareto front of optimal plans with
the chosen plan and the heuristics marked. ``save_html`` writes the same
chart (inline SVG) with the region and plan tables.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

from runtime_checks.plan import Plan, pareto  # noqa: E402
from runtime_checks.profile import Profile  # noqa: E402

__all__ = ["figure", "save_chart", "save_html"]

_MIB = 2**20


def figure(prof: Profile, *, chosen: Plan | None = None, heuristics: Sequence[Plan] = ()) -> plt.Figure:
    """The two-panel figure: per-region bars and the Pareto front."""
    fig, (bars, front) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    names = [r.name for r in prof.regions]
    xs = range(len(names))
    freed = [max(r.saved_bytes - r.kept_bytes, 0) / _MIB for r in prof.regions]
    bars.bar([x - 0.2 for x in xs], freed, width=0.4, color="#4878d0", label="MiB freed (saved - kept)")
    bars.set_ylabel("MiB freed by checkpointing")
    bars.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
    t = bars.twinx()
    t.bar([x + 0.2 for x in xs], [r.recompute_s * 1e3 for r in prof.regions], width=0.4, color="#ee854a",
          yerr=[0 if r.recompute_noise_s != r.recompute_noise_s else r.recompute_noise_s * 1e3 for r in prof.regions],
          label="recompute ms")
    t.set_ylabel("recompute ms (median, MAD)")
    bars.set_title("per region")
    handles = bars.get_legend_handles_labels()[0] + t.get_legend_handles_labels()[0]
    bars.legend(handles, ["MiB freed", "recompute ms"], loc="upper right", fontsize=8)
    plans = sorted([*pareto(prof), *([chosen] if chosen is not None and chosen.method == "milp" else [])],
                   key=lambda p: p.predicted_bytes)
    front.step([p.predicted_bytes / _MIB for p in plans], [p.predicted_recompute_s * 1e3 for p in plans],
               where="post", color="#6acc64", marker="o", label="optimal plans")
    for h in heuristics:
        front.scatter([h.predicted_bytes / _MIB], [h.predicted_recompute_s * 1e3], marker="s", s=50, label=h.method)
    if chosen is not None:
        front.scatter([chosen.predicted_bytes / _MIB], [chosen.predicted_recompute_s * 1e3], marker="*", s=200,
                      color="#d65f5f", zorder=5, label="chosen")
        if chosen.budget_bytes is not None:
            front.axvline(chosen.budget_bytes / _MIB, color="grey", linestyle="--", linewidth=1, label="budget")
    front.set_xlabel("activation MiB held between forward and backward")
    front.set_ylabel("recompute ms per step")
    front.set_title("memory / time")
    front.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_chart(prof: Profile, path: str | Path, *, chosen: Plan | None = None, heuristics: Sequence[Plan] = ()) -> Path:
    """Write the figure; the format follows the suffix (``.png``, ``.svg``, ``.pdf``)."""
    out = Path(path)
    fig = figure(prof, chosen=chosen, heuristics=heuristics)
    try:
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out


def save_html(prof: Profile, path: str | Path, *, chosen: Plan | None = None, heuristics: Sequence[Plan] = ()) -> Path:
    """A self-contained HTML report: the chart as inline SVG, the regions and the plans as tables."""
    buf = io.StringIO()
    fig = figure(prof, chosen=chosen, heuristics=heuristics)
    try:
        fig.savefig(buf, format="svg")
    finally:
        plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.saved_bytes / _MIB:.2f}</td><td>{r.kept_bytes / _MIB:.2f}</td>"
        f"<td>{r.recompute_s * 1e3:.2f}</td><td>{html.escape(r.unsafe)}</td></tr>"
        for r in prof.regions
    )
    plans = [p for p in [chosen, *heuristics] if p is not None]
    prow = "".join(
        f"<tr><td>{p.method}</td><td>{html.escape(', '.join(p.regions))}</td><td>{p.predicted_bytes / _MIB:.2f}</td>"
        f"<td>{p.predicted_recompute_s * 1e3:.1f}</td><td>{'yes' if p.meets_budget else 'no'}</td></tr>"
        for p in plans
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>ckptlint plan</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Checkpointing trade-off</h1><p>{prof.total_saved_bytes / _MIB:.2f} MiB saved for backward unchecked; "
        f"step {prof.step_s * 1e3:.1f} ms on {html.escape(prof.device)} ({prof.peak_kind}).</p>{svg}"
        "<h2>Regions</h2><table><tr><th>region</th><th>saved MiB</th><th>kept MiB</th><th>recompute ms</th><th>unsafe</th></tr>"
        f"{rows}</table>"
        + (f"<h2>Plans</h2><table><tr><th>method</th><th>regions</th><th>held MiB</th><th>recompute ms</th><th>meets budget</th></tr>{prow}</table>" if plans else "")
        + "</body></html>"
    )
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out
