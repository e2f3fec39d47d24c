"""Sweeps through executors: the same rows in-process, on a local process pool and on a real
Dask LocalCluster (2 workers); resume; a worker lost mid-sweep; bad input exits 2 first."""

import json
import os
import signal
import threading
import time

import pytest

from asymptotics import executors
from asymptotics.executors import ProcessExecutor, SerialExecutor, Task
from smi.cli import main

GRID = ["thresholds", "--skip", "0.5", "1", "2", "--depth", "1", "2", "--resolution", "0",
        "--format", "json"]
CURVE = ["curve", "--model", "phase-retrieval", "--alphas", "0.4:0.9:0.1", "--tol", "1e-9",
         "--format", "json"]


def _run(args, capsys):
    assert main(args) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed")
    # ":0": a free port for the dashboard (None still takes 8787, which the other
    # pytest-xdist worker's cluster may hold: a warning)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc:
        with distributed.Client(lc, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            yield lc, client


def test_threshold_grid_identical_serial_pool_and_dask(cluster, capsys, tmp_path):
    lc, _ = cluster
    serial = _run(GRID + ["--workers", "1"], capsys)
    rows = json.loads(serial)
    assert len(rows) == 3 * (1 + 2)  # depth 1 and 2 at three skips: a row per layer
    assert [r["depth"] for r in rows[:3]] == [1, 1, 1]
    assert _run(GRID + ["--workers", "2"], capsys) == serial
    out = tmp_path / "grid.json"
    assert main(GRID + ["--cluster", lc.scheduler_address, "--output", str(out)]) == 0
    assert out.read_text() == serial


def test_curve_identical_serial_pool_and_dask(cluster, capsys, tmp_path):
    lc, _ = cluster
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"type": "Scheduler", "address": lc.scheduler_address}))
    files = {}
    outs = {}
    for name, extra in [("serial", ["--workers", "1"]), ("pool", ["--workers", "2"]),
                        ("dask", ["--cluster", lc.scheduler_address]),
                        ("dask-file", ["--scheduler-file", str(sched)])]:
        files[name] = tmp_path / f"{name}.jsonl"
        outs[name] = _run(CURVE + extra + ["--output", str(files[name])], capsys)
    text = files["serial"].read_text()
    for name in ("pool", "dask", "dask-file"):
        assert outs[name] == outs["serial"] and files[name].read_text() == text
    assert len(text.splitlines()) == 19  # the header, 6 alphas on each branch, Bayes rows


def test_worker_killed_mid_sweep_still_completes_the_file(cluster, capsys, tmp_path):
    lc, client = cluster
    grid = ["thresholds", "--skip", "0.5:3:0.5", "--method", "mc", "--mc-samples", "8192",
            "--resolution", "0", "--format", "json"]  # seeded Monte Carlo: ~0.6 s per point
    reference = _run(grid + ["--workers", "1"], capsys)
    out = tmp_path / "killed.json"
    status = {}

    def sweep():
        status["rc"] = main(grid + ["--cluster", lc.scheduler_address, "--output", str(out)])

    runner = threading.Thread(target=sweep, daemon=True)
    runner.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        busy = [w for w, keys in client.processing().items() if keys]
        if busy and out.exists() and out.stat().st_size > 0:
            killed = busy[0]  # one task written, another in flight on this worker
            pid = client.run(os.getpid, workers=[killed])[killed]
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=120)
    assert not runner.is_alive(), "the sweep did not finish"
    assert killed is not None, "no worker was busy while the sweep ran"
    assert status["rc"] == 0
    assert out.read_text() == reference
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_resume_computes_only_missing_points(tmp_path, capsys, monkeypatch):
    import asymptotics as cli  # the command calls asymptotics.threshold_task

    out = tmp_path / "grid.csv"
    args = GRID[:-1] + ["csv", "--workers", "1", "--output", str(out)]
    assert main(args) == 0
    final = out.read_text()
    # an interrupted journal: the first grid point, and the second cut in its second row
    rows = [r for r in json.loads(_run(GRID + ["--workers", "1"], capsys))]
    lines = [json.dumps(r) for r in rows]
    header = final.splitlines()[0][2:]  # the finished CSV's settings record, "# {...}"
    assert json.loads(header)["header"]["kind"] == "thresholds"
    out.write_text(header + "\n" + lines[0] + "\n" + lines[1] + "\n" + lines[2][:25])
    calls = []
    real = cli.threshold_task
    monkeypatch.setattr(cli, "threshold_task", lambda p: calls.append(p) or real(p))
    assert main(args + ["--resume"]) == 0
    assert out.read_text() == final
    assert len(calls) == 5  # 6 grid points, the first one read back
    calls.clear()
    assert main(args + ["--resume"]) == 0  # a finished CSV file: nothing to compute
    assert out.read_text() == final and calls == []


def test_process_pool_reruns_the_tasks_of_a_lost_worker(tmp_path):
    marker = tmp_path / "crashed"
    tasks = [Task(str(i), {"i": i, "marker": str(marker)}) for i in range(4)]
    with ProcessExecutor(2) as ex:
        got = dict(ex.map_unordered(_crash_once, tasks))
    assert got == {str(i): i * i for i in range(4)} and marker.exists()
    with SerialExecutor() as ex:
        assert dict(ex.map_unordered(executors.noop_task, tasks[:2])) == {
            "0": tasks[0].params, "1": tasks[1].params}


def _crash_once(params):
    if params["i"] == 2 and not os.path.exists(params["marker"]):
        open(params["marker"], "w").close()
        os._exit(1)  # the worker dies mid-sweep
    return params["i"] ** 2


BAD = [
    (["--cluster", "localhost:8786"], "--cluster"),
    (["--cluster", "http://host:1"], "--cluster"),
    (["--scheduler-file", "/nonexistent/scheduler.json"], "--scheduler-file"),
    (["--cluster", "tcp://127.0.0.1:8786", "--scheduler-file", "x.json"], "--cluster"),
    (["--workers", "0"], "--workers"),
    (["--workers", "two"], "--workers"),
    (["--cluster", "tcp://127.0.0.1:8786", "--workers", "2"], "--workers"),
    (["--resume"], "--resume"),
]


@pytest.mark.parametrize("command,extra,option", [
    (command, extra, option) for command in ("thresholds", "curve", "train", "amp")
    for extra, option in BAD
    if not (option == "--resume" and command in ("train", "amp"))  # no --resume there
])
def test_bad_executor_input_exits_2_before_any_work(command, extra, option, capsys,
                                                    monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("work started")

    for cls in (executors.SerialExecutor, executors.ProcessExecutor):
        monkeypatch.setattr(cls, "map_unordered", no_work)
    monkeypatch.setattr(executors.DaskExecutor, "__init__", no_work)
    argv = {"thresholds": ["thresholds"], "curve": ["curve", "--model", "linear"],
            "train": ["simulate", "train"], "amp": ["simulate", "amp"]}[command]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0]


def test_missing_dask_is_a_clear_error(monkeypatch, capsys):
    real = executors.importlib.import_module

    def fake(name, *a):
        if name.startswith("dask"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a)

    monkeypatch.setattr(executors.importlib, "import_module", fake)
    assert main(["thresholds", "--cluster", "tcp://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "dask" in err[0]


def test_simulations_identical_in_process_and_on_dask(cluster, tmp_path):
    lc, _ = cluster
    runs = {
        "train": ["simulate", "train", "--dim", "40", "--alphas", "1,2", "--seeds", "2",
                  "--steps", "20", "--optimizer", "gd,adam", "--n-test", "100"],
        "amp": ["simulate", "amp", "--model", "sign", "--alpha", "2", "--dim", "100",
                "--seeds", "3", "--max-iter", "5", "--n-test", "100"],
    }
    for name, argv in runs.items():
        texts = []
        for extra in (["--workers", "1"], ["--cluster", lc.scheduler_address]):
            out = tmp_path / f"{name}{len(texts)}.jsonl"
            assert main(argv + extra + ["--output", str(out)]) == 0
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            for r in rows:
                r.pop("wall_s", None)  # timings differ; every number does not
            texts.append(rows)
        assert texts[0] == texts[1] and len(texts[0]) > 4


def test_curve_over_several_settings_tags_rows(capsys):
    base = ["curve", "--model", "linear", "--alphas", "0.5,1", "--format", "json",
            "--workers", "1"]
    rows = json.loads(_run(base + ["--noise", "0.1,0.3"], capsys))
    assert {r["noise"] for r in rows} == {0.1, 0.3} and len(rows) == 12
    for noise in (0.1, 0.3):
        single = json.loads(_run(base + ["--noise", str(noise)], capsys))
        # every row carries its model's parameters, a single setting's too
        assert [r for r in rows if r["noise"] == noise] == single
