"""sg.build_info(), SIMD path selection (in process and via SKETCHGN_SIMD) and `sketchgn info`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import sketchgn as sg
from sketchgn import _core
from conftest import INITIAL_SIMD_LEVEL, SIMD_LEVELS, run_python

ALL_LEVELS = ("baseline", "avx2", "avx512")
REQUIRED_KEYS = {"version", "simd", "simd_available", "openmp", "max_threads", "compiler", "eigen_version"}
UNSUPPORTED_LEVELS = [level for level in ALL_LEVELS if level not in SIMD_LEVELS]


def _cli(*args, env_remove=()):
    env = dict(os.environ)
    for key in env_remove:
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "sketchgn", *args], capture_output=True, text=True, env=env, timeout=120
    )


# --------------------------------------------------------------------------------------------
# build_info()
# --------------------------------------------------------------------------------------------


def test_build_info_keys_and_types():
    info = sg.build_info()
    assert isinstance(info, dict)
    assert REQUIRED_KEYS <= set(info)
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["simd"], str)
    assert isinstance(info["simd_available"], list)
    assert isinstance(info["max_threads"], int) and info["max_threads"] >= 1
    for key in ("openmp", "compiler", "eigen_version"):
        assert isinstance(info[key], str) and info[key], key
    # JSON-serialisable as is (the CLI prints it)
    assert json.loads(json.dumps(info)) == info


def test_build_info_version_matches_package():
    info = sg.build_info()
    assert info["version"] == sg.__version__ == dist_version("sketchgn")


def test_build_info_simd_fields():
    info = sg.build_info()
    available = info["simd_available"]
    assert "baseline" in available
    assert set(available) <= set(ALL_LEVELS)
    # listed from the lowest to the highest, without repeats
    assert available == sorted(set(available), key=ALL_LEVELS.index)
    assert info["simd"] in available
    assert info["simd"] == _core.simd_level()


def test_build_info_eigen_version_looks_like_a_version():
    parts = sg.build_info()["eigen_version"].split(".")
    assert len(parts) >= 2 and all(p.isdigit() for p in parts[:2])
    assert int(parts[0]) == 3


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
def test_build_info_max_threads_is_the_usable_cores():
    assert sg.build_info()["max_threads"] == len(os.sched_getaffinity(0))


def test_build_info_returns_a_fresh_dict():
    info = sg.build_info()
    info["version"] = "changed"
    info["simd_available"].append("x")
    assert sg.build_info()["version"] != "changed"
    assert "x" not in sg.build_info()["simd_available"]


# --------------------------------------------------------------------------------------------
# Switching the SIMD path in process
# --------------------------------------------------------------------------------------------


def test_set_simd_level_switches_and_reports(simd_level):
    assert _core.simd_level() == simd_level
    assert sg.build_info()["simd"] == simd_level
    assert _core.fwht_kernel_name() == simd_level
    x = np.arange(-8.0, 8.0).reshape(2, 8)
    assert np.array_equal(sg.fwht(x), x @ scipy.linalg.hadamard(8).T)


def test_simd_fixture_restores_previous_level():
    # Runs after tests that used the `simd_level` fixture (file order): each must have restored the
    # level that was active when the test session started.
    assert _core.simd_level() == INITIAL_SIMD_LEVEL
    assert sg.build_info()["simd"] == INITIAL_SIMD_LEVEL


@pytest.mark.parametrize("name", ["sse", "AVX2", "", "native", "avx512 "])
def test_set_simd_level_unknown_name(name):
    before = _core.simd_level()
    with pytest.raises(ValueError):
        _core.set_simd_level(name)
    assert _core.simd_level() == before


@pytest.mark.parametrize("level", UNSUPPORTED_LEVELS or ["<none>"])
def test_set_simd_level_unsupported(level):
    if level == "<none>":
        pytest.skip("this CPU supports every SIMD level the build knows")
    before = _core.simd_level()
    with pytest.raises(ValueError):
        _core.set_simd_level(level)
    assert _core.simd_level() == before


# --------------------------------------------------------------------------------------------
# SKETCHGN_SIMD at import (fresh interpreters)
# --------------------------------------------------------------------------------------------

_REPORT_LEVEL = """
import json, numpy as np, scipy.linalg, sketchgn as sg
from sketchgn import _core
x = np.random.default_rng(0).standard_normal((3, 64))
ok = bool(np.allclose(sg.fwht(x), x @ scipy.linalg.hadamard(64).T))
print(json.dumps({"level": _core.simd_level(), "info": sg.build_info()["simd"],
                  "kernel": _core.fwht_kernel_name(), "ok": ok}))
"""

_REPORT_IMPORT_ERROR = """
try:
    import sketchgn
except BaseException as e:
    print(type(e).__name__, isinstance(e, ValueError), str(e))
else:
    print("imported", sketchgn.build_info()["simd"])
"""


@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_env_var_forces_simd_level(level):
    proc = run_python(_REPORT_LEVEL, env_extra={"SKETCHGN_SIMD": level})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == {"level": level, "info": level, "kernel": level, "ok": True}


def test_default_is_best_available_level():
    proc = run_python(_REPORT_LEVEL, env_remove=("SKETCHGN_SIMD",))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["level"] == SIMD_LEVELS[-1]
    assert report["ok"] is True


@pytest.mark.parametrize("name", ["bogus", "AVX2", "sse4"])
def test_env_var_unknown_level_fails_import(name):
    proc = run_python(_REPORT_IMPORT_ERROR, env_extra={"SKETCHGN_SIMD": name})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert not out.startswith("imported"), out
    exc_name, is_value_error, message = out.split(" ", 2)
    assert is_value_error == "True", f"expected a ValueError, got {exc_name}: {message}"
    assert "SKETCHGN_SIMD" in message
    assert name in message


@pytest.mark.parametrize("level", UNSUPPORTED_LEVELS or ["<none>"])
def test_env_var_level_above_cpu_fails_import(level):
    if level == "<none>":
        pytest.skip("this CPU supports every SIMD level the build knows")
    proc = run_python(_REPORT_IMPORT_ERROR, env_extra={"SKETCHGN_SIMD": level})
    out = proc.stdout.strip()
    assert not out.startswith("imported"), out
    exc_name, is_value_error, message = out.split(" ", 2)
    assert is_value_error == "True", f"expected a ValueError, got {exc_name}: {message}"
    assert "SKETCHGN_SIMD" in message


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_info_json():
    proc = _cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert REQUIRED_KEYS <= set(info)
    here = sg.build_info()
    for key in ("version", "simd_available", "openmp", "max_threads", "compiler", "eigen_version"):
        assert info[key] == here[key], key
    assert info["simd"] in info["simd_available"]


def test_cli_info_text():
    proc = _cli("info")
    assert proc.returncode == 0, proc.stderr
    info = sg.build_info()
    text = proc.stdout
    for key in REQUIRED_KEYS:
        assert key in text, key
    assert info["version"] in text
    assert info["compiler"] in text
    assert info["eigen_version"] in text


def test_cli_info_json_under_forced_baseline():
    env_proc = subprocess.run(
        [sys.executable, "-m", "sketchgn", "info", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "SKETCHGN_SIMD": "baseline"},
        timeout=120,
    )
    assert env_proc.returncode == 0, env_proc.stderr
    assert json.loads(env_proc.stdout)["simd"] == "baseline"


def test_console_script_info_json():
    script = Path(sys.executable).with_name("sketchgn")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    proc = subprocess.run([str(script), "info", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert REQUIRED_KEYS <= set(json.loads(proc.stdout))
