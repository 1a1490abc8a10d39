"""What a run writes: --json FILE, --out DIR (DIR/bench.json and, with matplotlib, DIR/bench.png)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from . import startup
from .summary import machine
from .workloads import WORKLOADS

if TYPE_CHECKING:
    from .run import Options
    from .runner import Results


def write_json(path: str, results: Results, options: Options) -> None:
    """The figures, with the machine, the command's options and every repeat, as JSON."""
    out = {"machine": machine(), "seconds": options.seconds, "repeat": options.repeat, "results": results.rows,
           "samples": results.samples,
           "batch_bytes": {name: WORKLOADS[name].batch_bytes for name in results.rows},
           "batch_elements": {name: WORKLOADS[name].batch for name in results.rows}}
    if results.element_ms is not None:
        out["python_element_ms"] = results.element_ms
    out.update(results.cases)
    if results.startup:
        out["startup"] = startup.medians(results.startup)
        out["startup_runs"] = results.startup
    with open(path, "w") as f:
        json.dump(out, f, indent=2)


def write_outputs(options: Options, results: Results) -> None:
    """--json FILE; --out DIR: DIR/bench.json and, with matplotlib, DIR/bench.png."""
    if options.json:
        write_json(options.json, results, options)
    if not options.out:
        return
    os.makedirs(options.out, exist_ok=True)
    path = os.path.join(options.out, "bench.json")
    write_json(path, results, options)
    print(f"wrote {path}", file=sys.stderr)
    try:
        from .plot import plot
    except ImportError as e:
        print(f"no plot: {e.name or e} is not installed here; pip install \"pyfastq[bench]\" to get "
              f"{os.path.join(options.out, 'bench.png')}", file=sys.stderr)
        return
    png = os.path.join(options.out, "bench.png")
    plot(path, png)
    print(f"wrote {png}", file=sys.stderr)
