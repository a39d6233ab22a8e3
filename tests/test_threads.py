"""Thread safety and GIL release.

* One ReLUJacobian, one SketchPreconditioner (through solve_gn(..., preconditioner=P) and P.solve), one
  fitted GaussNewtonRegressor (predict), one SRHT and one KroneckerSRHT, used from 4 Python threads at
  once, give bitwise the results of serial calls (with the same n_threads; the kernels are large enough
  to run their own OpenMP teams inside each Python thread).
* The GIL is released in every long kernel: while a worker thread runs a kernel, the main thread keeps
  running Python (measured as the time the main thread is stalled for longer than half a kernel call --
  independent of how loaded the machine is, since a thread waiting for a CPU is not waiting for the GIL).
* Two threads calling sg.fwht on large arrays overlap: the wall time of 2 threads each doing the work
  is < 1.6x one thread's (best of several attempts; when other jobs occupy the cores so that NumPy's
  GIL-free matmul cannot do it either, the stalled-thread measurement stands in).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sketchgn as sg
from reliability import UNDER_ASAN

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - a scikit-learn dependency, normally present
    threadpool_limits = None

WORKERS = 4
REPEAT = 3


def run_concurrently(task, inputs):
    """task(input) in WORKERS threads started together, each REPEAT times; the list of results per input."""
    barrier = threading.Barrier(len(inputs))

    def worker(inp):
        barrier.wait()
        return [task(inp) for _ in range(REPEAT)]

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(worker, inputs))


def assert_bitwise(concurrent, serial, what):
    for i, (runs, ref) in enumerate(zip(concurrent, serial)):
        for rep, got in enumerate(runs):
            for g, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
                assert np.array_equal(g, r), f"{what}: thread {i}, repetition {rep} differs from the serial call"


def unit_rows(Z):
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(42)
    # n * m_pad >= 2^15 and m over one 512-neuron block: every product runs multi-threaded
    n, m, d = 300, 1100, 16
    X = unit_rows(rng.standard_normal((n, d)))
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    return X, W, a


# --------------------------------------------------------------------------------------------
# Shared objects from 4 threads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("threshold", [0.0, 1.5], ids=["dense", "sparse"])
def test_shared_jacobian(problem, n_threads, threshold):
    X, W, a = problem
    J = sg.ReLUJacobian(X, W, a, threshold=threshold, n_threads=n_threads)
    n, m, d = J.n, J.m, J.d
    rng = np.random.default_rng(1)
    inputs = [(rng.standard_normal((m, d)), rng.standard_normal(n), rng.standard_normal((m, d, 3)),
               rng.standard_normal((n, 3))) for _ in range(WORKERS)]
    L = J.aslinearoperator()

    def task(inp):
        V, u, Vs, U = inp
        return (J.matvec(V), J.rmatvec(u), J.matmat(Vs), J.rmatmat(U), J.gram(), J.forward(),
                L.matvec(V.reshape(-1)), J.pattern())

    serial = [task(inp) for inp in inputs]
    assert_bitwise(run_concurrently(task, inputs), serial, "ReLUJacobian")


@pytest.mark.parametrize("sketch", ["auto", "kronecker", "kronecker_rows", "srht", "gaussian"])
def test_shared_preconditioner(problem, sketch):
    X, W, a = problem
    J = sg.ReLUJacobian(X, W, a, n_threads=2)
    P = sg.SketchPreconditioner(J, sketch=sketch, damping=1e-3, seed=3, n_threads=2)
    R = P.R.copy()
    rng = np.random.default_rng(2)
    inputs = [(rng.standard_normal(J.n), rng.standard_normal(J.n)) for _ in range(WORKERS)]

    def task(inp):
        r, z = inp
        res = sg.solve_gn(J, r, preconditioner=P, damping=1e-3, tol=1e-10, n_threads=2)
        return (res.g, np.array([res.iterations, res.residual, res.converged]), P.solve(z), P.solve_transpose(z))

    serial = [task(inp) for inp in inputs]
    concurrent = run_concurrently(task, inputs)
    assert_bitwise(concurrent, serial, f"solve_gn with a shared {sketch} preconditioner")
    assert all(res[1][2] for res in serial), "the reference solves did not converge"
    assert np.array_equal(P.R, R), "using the preconditioner changed it"


def test_shared_estimator_predict():
    rng = np.random.default_rng(3)
    X = unit_rows(rng.standard_normal((200, 8)))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    est = sg.GaussNewtonRegressor(1100, solver="sketch", max_iter=3, random_state=0, n_threads=2).fit(X, y)
    inputs = [unit_rows(rng.standard_normal((500, 8))) for _ in range(WORKERS)]
    serial = [est.predict(Xi) for Xi in inputs]
    assert_bitwise(run_concurrently(est.predict, inputs), serial, "predict")
    assert np.array_equal(est.predict(X), est.predict(X))


def test_shared_sketches():
    rng = np.random.default_rng(4)
    S = sg.SRHT(3000, 256, seed=5)
    K = sg.KroneckerSRHT(1100, 16, 512, seed=6)
    inputs = [(rng.standard_normal((3000, 20)), rng.standard_normal((40, 1100)), rng.standard_normal((40, 16)),
               rng.standard_normal((64, 4096))) for _ in range(WORKERS)]

    def task(inp):
        A, U, Xk, x = inp
        return S.apply(A, n_threads=2), K.apply_kron(U, Xk, n_threads=2), sg.fwht(x, n_threads=2)

    serial = [task(inp) for inp in inputs]
    assert_bitwise(run_concurrently(task, inputs), serial, "SRHT / KroneckerSRHT / fwht")


@pytest.mark.parametrize("solver", ["sketch", "exact", "cg"])
def test_concurrent_fits_match_serial_fits(solver):
    rng = np.random.default_rng(5)
    data = []
    for _ in range(WORKERS):
        X = unit_rows(rng.standard_normal((120, 6)))
        data.append((X, np.cos(2 * X[:, 0]) - X[:, 2]))

    def fit(inp):
        X, y = inp
        est = sg.GaussNewtonRegressor(256, solver=solver, max_iter=4, random_state=1, n_threads=2).fit(X, y)
        return est.W_, np.array(est.loss_curve_), est.predict(X)

    serial = [fit(inp) for inp in data]
    assert_bitwise(run_concurrently(fit, data), serial, f"fit (solver={solver})")


# --------------------------------------------------------------------------------------------
# The GIL is released in every long kernel
# --------------------------------------------------------------------------------------------


def stalled_fraction(fn, calls=2):
    """Run fn `calls` times in a worker thread while the main thread runs a Python loop; return the
    fraction of the worker's run during which the main thread was stalled (gaps longer than 25 ms or a
    third of one call: a kernel holding the GIL stalls it for the whole kernel), and the call's duration."""
    t0 = time.perf_counter()
    fn()
    duration = time.perf_counter() - t0
    gap = min(0.025, duration / 3)
    done = threading.Event()
    errors = []

    def work():
        try:
            for _ in range(calls):
                fn()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=work)
    start = last = time.perf_counter()
    stalled = 0.0
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        if now - last > gap:
            stalled += now - last
        last = now
    busy = time.perf_counter() - start
    worker.join()
    assert not errors, errors
    return stalled / busy, duration


@pytest.fixture(scope="module")
def long_kernels():
    """Calls of roughly 30 ms - 3 s each on one core (n_threads=1)."""
    rng = np.random.default_rng(6)
    n, m, d = 6000, 4096, 32
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    J = sg.ReLUJacobian(X, W, a, n_threads=1)
    Xbig = np.concatenate([X, X])
    Jsmall = sg.ReLUJacobian(X[:2000], W, a, n_threads=1)
    Jmid = sg.ReLUJacobian(X[:4000], W, a, n_threads=1)
    P = sg.SketchPreconditioner(Jsmall, n_threads=1)
    S = sg.SRHT(2**16, 1024, seed=1)
    K = sg.KroneckerSRHT(4096, 32, 8000, seed=2)
    x = rng.standard_normal(2**24)  # calls of ~100 ms: well above the scheduling noise of a busy machine
    x_out = np.zeros_like(x)
    A = rng.standard_normal((2**16, 64))
    U, Xk = rng.standard_normal((3000, 4096)), rng.standard_normal((3000, 32))
    Ak = rng.standard_normal((4096 * 32, 32))
    V, Ur = rng.standard_normal((m, d, 4)), rng.standard_normal((n, 4))
    r, z, z3 = rng.standard_normal(n), rng.standard_normal(2000), rng.standard_normal(4000)
    return {
        "fwht": lambda: sg.fwht(x, out=x_out, n_threads=1),
        "SRHT.apply": lambda: S.apply(A, n_threads=1),
        "KroneckerSRHT.apply_kron": lambda: K.apply_kron(U, Xk, n_threads=1),
        "KroneckerSRHT.apply": lambda: K.apply(Ak, n_threads=1),
        "ReLUJacobian()": lambda: sg.ReLUJacobian(Xbig, W, a, n_threads=1),
        "ReLUJacobian.matmat": lambda: J.matmat(V, n_threads=1),
        "ReLUJacobian.rmatmat": lambda: J.rmatmat(Ur, n_threads=1),
        "ReLUJacobian.gram": lambda: J.gram(n_threads=1),
        "solve_gn(cg)": lambda: sg.solve_gn(J, r, method="cg", maxiter=8, tol=1e-30, n_threads=1),
        "solve_gn(sketch, reused P)": lambda: sg.solve_gn(Jsmall, z, preconditioner=P, maxiter=30, tol=1e-30,
                                                          n_threads=1),
        "SketchPreconditioner()": lambda: sg.SketchPreconditioner(Jsmall, n_threads=1),
        "solve_gn(exact)": lambda: sg.solve_gn(Jmid, z3, method="exact", n_threads=1),
    }


KERNELS = ["fwht", "SRHT.apply", "KroneckerSRHT.apply_kron", "KroneckerSRHT.apply", "ReLUJacobian()",
           "ReLUJacobian.matmat", "ReLUJacobian.rmatmat", "ReLUJacobian.gram", "solve_gn(cg)",
           "solve_gn(sketch, reused P)", "SketchPreconditioner()", "solve_gn(exact)"]


def _matmul_like(duration):
    """A call of NumPy's matmul on one BLAS thread (known to release the GIL) lasting about `duration`."""
    k = 64
    M = np.random.default_rng(8).standard_normal((k, k))
    while True:
        t0 = time.perf_counter()
        M @ M
        if time.perf_counter() - t0 >= duration / 2 or k >= 4096:
            return lambda: M @ M
        k *= 2
        M = np.random.default_rng(8).standard_normal((k, k))


def gil_verdict(fn, what):
    """Assert that fn releases the GIL. Retried; when the machine is so busy that the main thread waits
    for a CPU by itself, a GIL-free control call of the same length (NumPy's matmul) is the yardstick."""
    attempts = []
    for _ in range(3):
        fraction, duration = stalled_fraction(fn)
        attempts.append(round(fraction, 2))
        if fraction < 0.3:
            return attempts, None
        if fraction > 0.7:
            break
    assert duration > 0.01, f"{what}: a call takes {duration * 1e3:.1f} ms, too short to tell"
    ctx = threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
    with ctx:
        reference = _matmul_like(duration)
        control = max(round(stalled_fraction(reference)[0], 2) for _ in range(2))
    assert min(attempts) < 0.7 and min(attempts) <= control + 0.25, (
        f"{what} holds the GIL: another Python thread was stalled for {attempts} of the run (calls of "
        f"{duration:.2f} s; {control} for a GIL-free NumPy matmul of the same length)")
    return attempts, control


@pytest.mark.skipif(UNDER_ASAN, reason="timing: the sanitizer build is several times slower")
@pytest.mark.parametrize("kernel", KERNELS)
def test_gil_released_in_long_kernel(long_kernels, kernel):
    gil_verdict(long_kernels[kernel], kernel)


def _wall_ratio(work):
    """(wall time of work(0) and work(1) in two threads) / (wall time of work(0) alone, best of 2)"""
    t1 = math.inf
    for _ in range(2):
        t = time.perf_counter()
        work(0)
        t1 = min(t1, time.perf_counter() - t)
    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.perf_counter() - t) / t1


@pytest.mark.skipif(UNDER_ASAN, reason="timing: the sanitizer build is several times slower")
def test_two_threads_calling_fwht_overlap():
    # Wall time of two threads each doing the work with n_threads=1 < 1.6x one thread's, in one of
    # several attempts. When other jobs occupy the cores no code can reach that; then each attempt also
    # measures NumPy's matmul on one BLAS thread (known to release the GIL) right after, fwht must do
    # about as well as it, and the stalled-thread measurement (a kernel holding the GIL stalls every
    # other Python thread for the whole call, however busy the machine) must show no GIL held.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 2**12))  # 256 KiB in, 256 KiB out: in each core's L2
    outs = [np.empty_like(x), np.empty_like(x)]
    sg.fwht(x, out=outs[1], n_threads=1)
    t0 = time.perf_counter()
    sg.fwht(x, out=outs[0], n_threads=1)
    reps = max(50, int(0.3 / max(time.perf_counter() - t0, 1e-6)))

    def work(i):
        for _ in range(reps):
            sg.fwht(x, out=outs[i], n_threads=1)

    M = rng.standard_normal((300, 300))
    M @ M
    t0 = time.perf_counter()
    M @ M
    control_reps = max(10, int(0.3 / max(time.perf_counter() - t0, 1e-6)))

    def control(i):
        for _ in range(control_reps):
            M @ M

    ratios, controls = [], []
    ctx = threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
    with ctx:
        for _ in range(6):
            ratios.append(round(_wall_ratio(work), 2))
            if ratios[-1] < 1.6:
                break
            controls.append(round(_wall_ratio(control), 2))
    assert np.array_equal(outs[0], outs[1])
    print(f"\n2 threads / 1 thread: fwht {ratios}, NumPy matmul {controls}")
    if ratios[-1] < 1.6:
        return
    assert np.median(ratios) <= 1.25 * np.median(controls), (
        f"2 threads calling fwht took {ratios} x the time of 1, while NumPy's matmul took {controls}: "
        f"the fwht calls do not run in parallel")
    big = rng.standard_normal(2**24)  # calls of ~100 ms: above the scheduling noise of a busy machine
    big_out = np.zeros_like(big)
    gil_verdict(lambda: sg.fwht(big, out=big_out, n_threads=1), "fwht")
