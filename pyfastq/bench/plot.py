"""bench.png from bench.json: throughput per workload per method, log scale, with the one-copy limit.

    python -m pyfastq.bench.plot results/bench.json results/bench.png

Needs matplotlib (pip install "pyfastq[bench]"); importing this without it is an ImportError.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt

OURS = ("native", "python", "thread", "process")  # pyfastq's methods, drawn in its colour
LIMIT = "np_copyto"  # one memcpy of the batch: drawn as a line, the one-copy limit


def plot(json_path: str, png_path: str) -> None:
    with open(json_path) as f:
        data = json.load(f)
    rows = {name: row for name, row in data["results"].items() if any(v for v in row.values())}
    if not rows:
        raise ValueError(f"{json_path} holds no throughput figures to plot")
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.2 + 0.45 * sum(len(r) for r in rows.values())),
                             squeeze=False, gridspec_kw={"height_ratios": [max(1, len(r)) for r in rows.values()]})
    for ax, (name, row) in zip(axes[:, 0], rows.items(), strict=True):
        elements = data.get("batch_elements", {}).get(name, 1)
        unit = "elements/s" if elements > 1 else "batches/s"
        bars = [(m, v * elements) for m, v in row.items() if v and m != LIMIT]
        labels = [m for m, _ in bars]
        colours = ["#d9480f" if m.split(" ")[0] in OURS else "#868e96" for m in labels]
        ax.barh(labels, [v for _, v in bars], color=colours)
        for y, (_, v) in enumerate(bars):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        if row.get(LIMIT):
            ax.axvline(row[LIMIT] * elements, color="#1c7ed6", linestyle="--", linewidth=1.2)
            ax.text(row[LIMIT] * elements, len(bars) - 0.4, " one np.copyto", color="#1c7ed6", fontsize=8, va="top")
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{name} ({unit}, log scale)", fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
    fig.suptitle(f"pyfastq bench: {data['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
