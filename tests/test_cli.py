"""The command line: `python -m sketchgn train` and `python -m sketchgn info`, each run in a fresh
interpreter.

Good runs are checked for what they print (per-step lines, a summary, JSON whose numbers agree with
each other, a PNG), bad input for the contract of a command-line tool: a non-zero exit status and a
single line on stderr that names the problem, never a Python traceback.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import sketchgn as sg

# Small enough to train in well under a second (the size for the CLI tests).
SMALL = ["--n-samples", "300", "--n-features", "8", "--width", "512"]
JSON_KEYS = {"solver", "steps", "final_loss", "relative_loss", "test_r2", "seconds", "history"}
STEP_LINE = re.compile(r"^\s*step\s+(\d+)\b")


def run_cli(*args, cwd=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "sketchgn", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        timeout=timeout,
    )


def assert_clean_error(proc, *needles):
    """Non-zero exit, exactly one line on stderr mentioning every needle, no traceback anywhere."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got {len(lines)} lines:\n{proc.stderr}"
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def teacher_data(seed, n, d, n_outputs=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Wt = rng.standard_normal((16, d))
    at = rng.choice([-1.0, 1.0], (16, n_outputs or 1))
    Y = np.maximum(X @ Wt.T, 0.0) @ at / 4.0
    return X, (Y[:, 0] if n_outputs is None else Y)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")
    return path


def check_result_json(result, n_samples, n_features, n_outputs=1, test_fraction=0.2):
    assert JSON_KEYS <= set(result), set(result)
    assert result["solver"] in ("sketch", "exact", "cg", "gd")
    assert isinstance(result["steps"], int) and result["steps"] >= 1
    history = result["history"]
    assert isinstance(history, list) and history
    assert all(h["solver"] == result["solver"] for h in history)
    # One entry per step (the outputs share one network and one step), losses summed over outputs.
    assert [h["step"] for h in history] == list(range(1, len(history) + 1))
    losses = [h["loss"] for h in history]
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert result["steps"] == len(history)
    assert result["final_loss"] == pytest.approx(history[-1]["loss"], rel=1e-12)
    if "initial_loss" in result:
        assert result["relative_loss"] == pytest.approx(result["final_loss"] / result["initial_loss"], rel=1e-12)
    assert 0 <= result["relative_loss"] < 1
    assert result["seconds"] > 0 and result["seconds"] >= history[-1]["seconds"] * 0.999
    if "n_train" in result:
        assert result["n_train"] + result["n_test"] == n_samples
        assert result["n_test"] == round(test_fraction * n_samples)
    if "n_features" in result:
        assert result["n_features"] == n_features
    assert result["test_r2"] is None or (isinstance(result["test_r2"], float) and result["test_r2"] <= 1)


# --------------------------------------------------------------------------------------------
# train: the built-in problem
# --------------------------------------------------------------------------------------------


def test_train_prints_steps_summary_and_plot(tmp_path):
    out = tmp_path / "loss.png"
    proc = run_cli("train", *SMALL, "--plot", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    steps = [int(m.group(1)) for m in map(STEP_LINE.match, lines) if m]
    assert steps and steps == list(range(1, len(steps) + 1)), proc.stdout
    summary = [line for line in lines if "R^2" in line]
    assert len(summary) == 1, proc.stdout
    # The summary comes after the last step line and reports the number of steps taken.
    assert lines.index(summary[0]) > max(i for i, line in enumerate(lines) if STEP_LINE.match(line))
    assert re.search(rf"\b{len(steps)} steps?\b", summary[0]), summary[0]
    # Each step line carries its loss, and the losses never increase.
    losses = [float(re.search(r"loss\s+([-+0-9.eE]+)", line).group(1)) for line in lines if STEP_LINE.match(line)]
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    # --plot FILE.png wrote a PNG there and said so.
    assert out.is_file() and out.stat().st_size > 100
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in proc.stdout


def test_train_json_output():
    proc = run_cli("train", *SMALL, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout is the JSON document and nothing else
    check_result_json(result, 300, 8)
    # The built-in problem is overparametrized (m d = 4096 >> n): the default tol (1e-6) is reached.
    assert result["relative_loss"] <= 1e-6, result["relative_loss"]
    assert result["test_r2"] is not None and math.isfinite(result["test_r2"])


def test_train_plot_to_an_unwritable_place(tmp_path):
    out = tmp_path / "no_such_dir" / "loss.png"
    proc = run_cli("train", *SMALL, "--max-iter", "2", "--plot", out)
    assert_clean_error(proc, str(out))
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# train --data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_position", ["last", "middle"])
def test_train_on_a_csv_file(tmp_path, target_position):
    X, y = teacher_data(1, 60, 3)
    if target_position == "last":
        header, rows = ["x1", "x2", "x3", "y"], np.column_stack([X, y])
    else:
        header, rows = ["x1", "y", "x2", "x3"], np.column_stack([X[:, :1], y, X[:, 1:]])
    path = write_csv(tmp_path / "data.csv", header, [[repr(float(v)) for v in row] for row in rows])
    proc = run_cli("train", "--data", path, "--target", "y", "--width", "256", "--solver", "exact",
                   "--n-threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    check_result_json(result, 60, 3)
    assert result["n_features"] == 3 and result["n_train"] + result["n_test"] == 60
    # It trained on these targets: the fit is good (a 256-wide network, 48 samples, 3 features).
    assert result["relative_loss"] < 1e-3


def test_train_on_an_npz_file(tmp_path):
    X, Y = teacher_data(2, 50, 4, n_outputs=2)
    for name, y, k in (("one.npz", Y[:, 0], 1), ("two.npz", Y, 2)):
        path = tmp_path / name
        np.savez(path, X=X, y=y)
        proc = run_cli("train", "--data", path, "--width", "128", "--max-iter", "3", "--solver", "exact",
                       "--n-threads", "1", "--json")
        assert proc.returncode == 0, (name, proc.stderr)
        result = json.loads(proc.stdout)
        check_result_json(result, 50, 4, n_outputs=k)


# --------------------------------------------------------------------------------------------
# train: bad input
# --------------------------------------------------------------------------------------------


GOOD_ROWS = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 0, 1], [2, 1, 0], [0, 3, 1]]


def make_bad_file(tmp_path, kind):
    """(path, extra arguments) for one kind of bad input file."""
    if kind == "missing file":
        return tmp_path / "nothing_here.csv", ["--target", "y"]
    if kind == "unsupported extension":
        path = tmp_path / "data.txt"
        write_csv(path, ["a", "b", "y"], GOOD_ROWS)
        return path, ["--target", "y"]
    if kind == "csv without --target":
        return write_csv(tmp_path / "data.csv", ["a", "b", "y"], GOOD_ROWS), []
    if kind == "csv missing target column":
        return write_csv(tmp_path / "data.csv", ["a", "b", "c"], GOOD_ROWS), ["--target", "y"]
    if kind == "csv non-numeric cell":
        rows = [list(r) for r in GOOD_ROWS]
        rows[2][1] = "abc"
        return write_csv(tmp_path / "data.csv", ["a", "b", "y"], rows), ["--target", "y"]
    if kind == "csv nan cell":
        rows = [list(r) for r in GOOD_ROWS]
        rows[3][0] = "nan"
        return write_csv(tmp_path / "data.csv", ["a", "b", "y"], rows), ["--target", "y"]
    if kind == "csv empty cell":
        rows = [list(r) for r in GOOD_ROWS]
        rows[1][2] = ""
        return write_csv(tmp_path / "data.csv", ["a", "b", "y"], rows), ["--target", "y"]
    if kind == "empty csv":
        path = tmp_path / "data.csv"
        path.write_text("")
        return path, ["--target", "y"]
    if kind == "csv header only":
        return write_csv(tmp_path / "data.csv", ["a", "b", "y"], []), ["--target", "y"]
    if kind == "csv ragged row":
        rows = [list(r) for r in GOOD_ROWS]
        rows[2] = rows[2][:2]
        return write_csv(tmp_path / "data.csv", ["a", "b", "y"], rows), ["--target", "y"]
    if kind == "csv only the target column":
        return write_csv(tmp_path / "data.csv", ["y"], [[r[0]] for r in GOOD_ROWS]), ["--target", "y"]
    if kind == "npz without y":
        path = tmp_path / "data.npz"
        np.savez(path, X=np.ones((6, 2)))
        return path, []
    if kind == "npz wrong lengths":
        path = tmp_path / "data.npz"
        np.savez(path, X=np.ones((6, 2)), y=np.ones(5))
        return path, []
    if kind == "npz 3-D y":
        path = tmp_path / "data.npz"
        np.savez(path, X=np.ones((6, 2)), y=np.ones((6, 2, 2)))
        return path, []
    if kind == "npz with NaN":
        path = tmp_path / "data.npz"
        X = np.ones((6, 2))
        X[2, 1] = np.nan
        np.savez(path, X=X, y=np.ones(6))
        return path, []
    if kind == "npz not a zip file":
        path = tmp_path / "data.npz"
        path.write_text("this is not an npz archive\n")
        return path, []
    raise AssertionError(kind)


BAD_FILES = [
    "missing file",
    "unsupported extension",
    "csv without --target",
    "csv missing target column",
    "csv non-numeric cell",
    "csv nan cell",
    "csv empty cell",
    "empty csv",
    "csv header only",
    "csv ragged row",
    "csv only the target column",
    "npz without y",
    "npz wrong lengths",
    "npz 3-D y",
    "npz with NaN",
    "npz not a zip file",
]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_train_bad_data_file(tmp_path, kind):
    path, extra = make_bad_file(tmp_path, kind)
    proc = run_cli("train", "--data", path, *extra, "--width", "16", "--max-iter", "1", "--n-threads", "1")
    assert_clean_error(proc, path.name)
    assert not STEP_LINE.search(proc.stdout)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--test-fraction", "1.5"], "test-fraction"),
        (["--n-threads", "0"], "n_threads"),
    ],
)
def test_train_bad_options(args, needle):
    proc = run_cli("train", "--n-samples", "40", "--n-features", "4", "--width", "16", "--max-iter", "1", *args)
    assert_clean_error(proc, needle)


def test_train_rejected_by_the_parser():
    proc = run_cli("train", "--n-samples", "40", "--n-features", "4", "--width", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--width" in proc.stderr


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------


def test_info_text():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    info = sg.build_info()
    keys = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert set(keys) == set(info)
    text = {line.split(None, 1)[0]: line.split(None, 1)[1].strip() for line in proc.stdout.splitlines()
            if line.strip()}
    assert text["version"] == sg.__version__
    assert text["simd"] == info["simd"]


def test_info_json():
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == sg.build_info()
    assert {"version", "simd", "simd_available", "openmp", "max_threads", "compiler", "eigen_version"} <= set(data)


def test_no_command_prints_help():
    proc = run_cli()
    assert proc.returncode != 0
    assert "train" in proc.stdout + proc.stderr and "info" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
