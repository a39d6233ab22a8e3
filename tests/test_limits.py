"""Requests too large for memory, and the largest accepted thread count.

Every request below needs more than this machine's memory (terabytes). Each must raise MemoryError or
ValueError with a message that names the size, before allocating -- never an attempt that the operating
system ends with an OOM kill. They run in a child process whose address space is capped
(RLIMIT_AS), so that a library that does try to allocate fails there instead of endangering the machine.

Skipped under AddressSanitizer: its operator new aborts instead of throwing std::bad_alloc, and its
shadow memory cannot live under an address-space cap.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from reliability import UNDER_ASAN

pytestmark = pytest.mark.skipif(UNDER_ASAN, reason="ASan aborts on failed allocations by design")

ADDRESS_SPACE_CAP = 8 * 2**30

CASES = {
    # name: statement (names available: sg, np, J1e6 = a cheap Jacobian with n = 10**6, d = m = 1)
    "gram() of n = 10**6": "J1e6.gram()",
    "solve_gn(method='exact') with n = 10**6": "sg.solve_gn(J1e6, np.ones(10**6), method='exact')",
    "SketchPreconditioner with n = 10**6": "sg.SketchPreconditioner(J1e6)",
    "matmat with a result of n * k = 10**12": "J1e6.matmat(np.zeros((1, 10**6)))",
    "rmatmat with a result of m d k = 10**12": (
        "sg.ReLUJacobian(np.ones((1, 1000)), np.ones((1000, 1000)), np.ones(1000))"
        ".rmatmat(np.zeros((1, 10**6)))"),
    "ReLUJacobian with a pattern of n * m = 10**12": (
        "sg.ReLUJacobian(np.ones((10**6, 1)), np.ones((10**6, 1)), np.ones(10**6))"),
    "fwht of 2**40 entries": "sg.fwht(np.broadcast_to(np.zeros(1), (2**40,)))",
    "SRHT(2**40, 1)": "sg.SRHT(2**40, 1)",
    "SRHT(2**36, 8)": "sg.SRHT(2**36, 8)",
    "SRHT(2**40, 2**40)": "sg.SRHT(2**40, 2**40)",
    "SRHT.apply to 10**6 columns of 2**20": "sg.SRHT(2**20, 2**20).apply(np.zeros((2**20, 10**6)))",
    "KroneckerSRHT(2**36, 1, 1)": "sg.KroneckerSRHT(2**36, 1, 1)",
    "KroneckerSRHT(2**40, 2**40, 1)": "sg.KroneckerSRHT(2**40, 2**40, 1)",
    "KroneckerSRHT.apply_kron with a 2**24 x 2**12 result": (
        "sg.KroneckerSRHT(2**12, 2**12, 2**24).apply_kron(np.zeros((2**12, 2**12)), np.zeros((2**12, 2**12)))"),
    "GaussNewtonRegressor(width=10**10).fit": (
        "sg.GaussNewtonRegressor(10**10, max_iter=1).fit(np.ones((4, 2)), np.ones(4))"),
    "GaussNewtonRegressor(solver='exact').fit with n = 10**6": (
        "sg.GaussNewtonRegressor(1, solver='exact', max_iter=1).fit("
        "np.random.default_rng(0).standard_normal((10**6, 1)), np.ones(10**6))"),
}

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    import numpy as np
    import sketchgn as sg

    J1e6 = sg.ReLUJacobian(np.ones((10**6, 1)), np.ones((1, 1)), np.ones(1))
    for name, statement in json.loads(sys.argv[1]).items():
        t0 = time.perf_counter()
        try:
            eval(statement)
            outcome = {{"exception": None, "message": ""}}
        except BaseException as exc:
            outcome = {{"exception": type(exc).__name__, "message": str(exc)}}
        outcome["name"] = name
        outcome["seconds"] = time.perf_counter() - t0
        outcome["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(outcome), flush=True)
    """
)

# A size in the message: a number with a unit of memory, or a count of entries / a shape.
NAMES_SIZE = re.compile(r"\d[\d.,]*\s*(?:[KMGTPE]i?B\b|bytes|entries|x\s*\d)|shape \(|\b\d{4,}\b")


@pytest.fixture(scope="module")
def outcomes():
    proc = subprocess.run([sys.executable, "-c", CHILD.format(cap=ADDRESS_SPACE_CAP), json.dumps(CASES)],
                          capture_output=True, text=True, timeout=600)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            results[item["name"]] = item
    results["__process__"] = {"returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_too_large_request_raises_naming_the_size(outcomes, name):
    proc = outcomes["__process__"]
    assert name in outcomes, (f"the child process died before reporting {name!r} "
                              f"(exit status {proc['returncode']}): {proc['stderr']}")
    got = outcomes[name]
    assert got["exception"] in ("MemoryError", "ValueError"), (
        f"{CASES[name]} -> {got['exception']}: {got['message']!r} (expected MemoryError or ValueError)")
    assert NAMES_SIZE.search(got["message"]), (
        f"{CASES[name]} -> {got['exception']}: {got['message']!r} does not name the size requested")
    assert got["seconds"] < 30, f"{name}: took {got['seconds']:.1f} s to refuse"


def test_the_child_stayed_small(outcomes):
    # Refusing must not allocate first: the peak resident memory of the whole child stays far below the
    # requests (the largest legitimate allocations are the 10**6-sample inputs, tens of MB).
    peak = max(o["maxrss_mib"] for k, o in outcomes.items() if not k.startswith("__"))
    assert peak < 2048, f"peak resident memory {peak:.0f} MiB"


LARGEST_THREAD_COUNT = textwrap.dedent(
    """
    import resource, sys
    # (a cap on the address space makes thread creation fail after a few hundred threads, instead of
    # after tens of thousands on this shared machine)
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
    import numpy as np
    import sketchgn as sg
    x = np.random.default_rng(0).standard_normal((64, 4096))
    try:
        y = sg.fwht(x, n_threads={n_threads})
    except (ValueError, MemoryError) as exc:
        print("refused:", exc, flush=True)
        sys.exit(0)
    assert np.array_equal(y, sg.fwht(x, n_threads=1))
    print("ok", flush=True)
    """
)


@pytest.mark.parametrize("n_threads", [2**10, 2**16])
def test_largest_accepted_thread_count_does_not_kill_the_process(n_threads):
    # n_threads up to 2**16 is accepted; OpenMP cannot create that many threads and libgomp then ends
    # the process ("Thread creation failed") or it crashes. A result (with fewer threads) or a
    # ValueError are both fine.
    proc = subprocess.run([sys.executable, "-c", LARGEST_THREAD_COUNT.format(n_threads=n_threads)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip(), (
        f"sg.fwht(np.zeros((64, 4096)), n_threads={n_threads}) killed the process: exit status "
        f"{proc.returncode}, stderr {proc.stderr.strip()[-500:]!r}")
