"""pyfastq bench, as a user runs it: the table, --out's bench.json and bench.png, and usage errors."""

import importlib.util
import json
import subprocess
import sys
import tempfile

import pytest

from support import CHILD_ENV, START_BUDGET_S

QUICK = ["--workloads", "seed", "--methods", "native,from_generator,np_copyto", "--quick", "--repeat", "2"]


def bench(*args, prelude=""):
    code = f"{prelude}import sys; from pyfastq.__main__ import main; sys.exit(main(['bench', *sys.argv[1:]]))"
    # Outside the checkout, so that its source tree (no compiled parts) cannot shadow the installed pyfastq.
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=CHILD_ENV,
                          cwd=tempfile.gettempdir(), timeout=START_BUDGET_S * 2)


def test_out_writes_every_figure_and_the_plot(native, tmp_path):
    pytest.importorskip("matplotlib")
    proc = bench(*QUICK, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "| seed | native |" in proc.stdout and "spread (min-max)" in proc.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data["results"]["seed"]) == {"native", "from_generator", "np_copyto"}
    assert all(len(v) == 2 and min(v) > 0 for v in data["samples"]["seed"].values())
    assert data["repeat"] == 2 and "cores" in data["machine"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_table_and_json_are_still_written(native, tmp_path):
    no_matplotlib = "import sys; sys.modules['matplotlib'] = None; "  # its import fails
    proc = bench(*QUICK, "--out", str(tmp_path), prelude=no_matplotlib)
    assert proc.returncode == 0, proc.stderr
    assert "| seed | native |" in proc.stdout
    assert json.loads((tmp_path / "bench.json").read_text())["results"]["seed"]["native"] > 0
    assert not (tmp_path / "bench.png").exists()
    assert 'pip install "pyfastq[bench]"' in proc.stderr


@pytest.mark.parametrize("args, says", [(["--workloads", "nope"], "unknown workload 'nope'"),
                                        (["--repeat", "0"], "--repeat takes an int >= 1")])
def test_bad_arguments_are_usage_errors(args, says):
    proc = bench(*args)
    assert proc.returncode == 2 and says in proc.stderr


def test_the_limits_and_producers_of_issue_13_run_and_report(native):
    methods = "native,put_many,reserve,fresh_put,np_copyto_cold,graph_loop"
    proc = bench("--workloads", "seed,image", "--methods", methods, "--quick", "--inter-op-threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "inter-op threads: 1" in proc.stdout
    for row in ("| seed | put_many |", "| seed | graph_loop |", "| image | reserve |", "| image | fresh_put |",
                "| image | np_copyto_cold |"):
        assert row in proc.stdout
    assert "seed: one producer thread calling put per element:" in proc.stdout and "put_many of 128" in proc.stdout
    assert "image: pyfastq native is" in proc.stdout and "cache-cold np.copyto" in proc.stdout
    assert "image: a producer making its batch in place (reserve) is" in proc.stdout


def test_inter_op_threads_must_be_positive():
    proc = bench("--inter-op-threads", "0")
    assert proc.returncode == 2 and "--inter-op-threads takes an int >= 1" in proc.stderr


def test_the_source_workloads_measure_pyfastq_and_every_peer_on_one_source(native):
    proc = bench("--workloads", "source_gil", "--quick")
    assert proc.returncode == 0, proc.stderr
    rows = ["thread P=2", "process P=2", "auto", "from_generator", "pydataset_threads P=2",
            "pydataset_processes P=2", "tf_map"]
    if importlib.util.find_spec("grain"):
        rows.append("grain P=2")
    else:
        assert "grain skipped: grain does not import" in proc.stderr
    for row in rows:
        assert f"| source_gil | {row} |" in proc.stdout
    assert "| source_gil | thread P=1 |" not in proc.stdout  # --quick: the largest worker count only
    assert "source_gil: pyfastq " in proc.stdout and "x the best peer" in proc.stdout
    assert "source_gil: pyfastq auto " in proc.stdout and "x the best fixed worker count" in proc.stdout


def test_without_grain_its_method_is_skipped_saying_so(native):
    no_grain = "import sys; sys.modules['grain'] = None; "  # its import fails
    proc = bench("--workloads", "source_image", "--methods", "process,grain", "--workers", "1", "--quick",
                 prelude=no_grain)
    assert proc.returncode == 0, proc.stderr
    assert "grain skipped: grain does not import" in proc.stderr and "pip install grain" in proc.stderr
    assert "| source_image | process P=1 |" in proc.stdout and "| source_image | grain" not in proc.stdout


def test_the_resume_workload_reports_each_way_and_the_restart_time(native, tmp_path):
    proc = bench("--workloads", "resume", "--quick", "--json", str(tmp_path / "out.json"))
    assert proc.returncode == 0, proc.stderr
    for case in ("seed", "small"):
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"| {case} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(float(c.replace(",", "")) > 0 for c in cells[1:4]), line  # tracked+restarts, tracked, untracked
        assert cells[4].endswith("x") and "0.9x" in cells[5], line
    assert "restart: a killed worker's replacement delivers its first element" in proc.stdout
    rows = json.loads((tmp_path / "out.json").read_text())["resume"]
    ways = ("tracked+restarts", "tracked", "untracked")
    assert set(rows) == {"restart"} | {f"{c} {w}" for c in ("seed", "small") for w in ways}
    assert 0 < rows["restart"] < START_BUDGET_S  # seconds


def test_every_method_of_a_workload_is_registered_for_it_in_the_order_methods_lists():
    from pyfastq.bench import methods, registry
    from pyfastq.bench.workloads import WORKLOADS

    # --methods' default, hence the order of each workload's rows.
    assert methods.ALL_METHODS == (
        "native", "shuffle", "put_many", "reserve", "fresh_put", "python", "thread", "process", "ray", "auto",
        "from_generator", "numpy_function", "fifo_queue", "ray_data", "np_copyto", "np_copyto_cold", "graph_loop",
        "pydataset_threads", "pydataset_processes", "grain", "tf_map")
    assert methods.BASELINES == ("from_generator", "numpy_function", "fifo_queue", "ray_data")
    for name, w in WORKLOADS.items():
        for m in w.methods:
            entry = registry.get(m)
            assert (entry.pipeline if w.source is not None else entry.measure) is not None, (name, m)


def test_an_unknown_method_is_an_error_naming_the_known_ones():
    from pyfastq.bench import methods
    from pyfastq.bench.workloads import WORKLOADS

    with pytest.raises(ValueError, match=r"unknown bench method 'nope'; the known ones: native, shuffle, .*tf_map"):
        methods.measure(WORKLOADS["seed"], "nope", 0.1)
    with pytest.raises(ValueError, match="'tf_map' runs on the source workloads only"):
        methods.measure(WORKLOADS["seed"], "tf_map", 0.1)
