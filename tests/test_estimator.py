"""sg.GaussNewtonRegressor: convergence of every solver, agreement of the solvers' Gauss-Newton step,
the scikit-learn contract, determinism, the line search, interruption, callbacks and bad parameters.

References are NumPy formulas independent of the library: the model
f(W, x) = (1/sqrt(m)) sum_r a_r relu(w_r . x - threshold), the loss 1/2 ||f - y||^2 and the
coefficient of determination. The synthetic problems are the paper's setting: unit-norm rows of X and
targets from a small random two-layer ReLU teacher network (or random targets for a narrow network,
where a full Gauss-Newton step overshoots).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import sketchgn as sg
import sketchgn._estimator as estimator_module
from conftest import rel_err

# The overparametrized problem of the issue: n = 500 unit-norm samples in d = 16, width m = 2048
# (m d = 32768 >> n).
N_OVER, D_OVER, M_OVER = 500, 16, 2048
TEACHER_WIDTH = 32


# --------------------------------------------------------------------------------------------
# References and data
# --------------------------------------------------------------------------------------------


def unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def teacher_problem(seed, n, d, teacher_width=TEACHER_WIDTH, n_outputs=None):
    """Unit-norm inputs and the outputs of random two-layer ReLU teachers (one per output)."""
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n, d)
    columns = []
    for _ in range(1 if n_outputs is None else n_outputs):
        Wt = rng.standard_normal((teacher_width, d))
        at = rng.choice([-1.0, 1.0], teacher_width)
        columns.append(np.maximum(X @ Wt.T, 0.0) @ at / np.sqrt(teacher_width))
    y = columns[0] if n_outputs is None else np.stack(columns, axis=1)
    return X, y


def ref_predict(X, W, a, threshold=0.0):
    """(1/sqrt(m)) relu(X W^T - threshold) a, in float64."""
    return np.maximum(X @ W.T - threshold, 0.0) @ a / np.sqrt(W.shape[0])


def dense_jacobian(X, W, a, threshold=0.0):
    """The n x (m d) Jacobian of f at W, formed densely: row i = (a_r 1[w_r . x_i > b] x_i)_r / sqrt m."""
    active = (X @ W.T - threshold > 0).astype(np.float64)
    return ((active * a)[:, :, None] * X[:, None, :]).reshape(X.shape[0], -1) / np.sqrt(W.shape[0])


def ref_loss(pred, y):
    res = np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return 0.5 * float(np.sum(res * res))


def ref_r2(pred, y):
    return 1.0 - np.sum((y - pred) ** 2) / np.sum((y - np.mean(y)) ** 2)


@pytest.fixture(scope="module")
def over_problem():
    return teacher_problem(2021, N_OVER, D_OVER)


@pytest.fixture(scope="module")
def over_fits(over_problem):
    """One fit per solver on the overparametrized problem, shared by the tests that inspect them."""
    X, y = over_problem
    cache = {}

    def get(solver):
        if solver not in cache:
            est = sg.GaussNewtonRegressor(M_OVER, solver=solver, random_state=0)
            cache[solver] = est.fit(X, y)
        return cache[solver]

    return get


@pytest.fixture(scope="module")
def small_problem():
    """Small and overparametrized (m d >> n) with a few steps of work: fast tests of the mechanics."""
    return teacher_problem(7, 120, 8)


@pytest.fixture(scope="module")
def narrow_problem():
    """A narrow network (m d = 512, n = 200) on random targets: the full Gauss-Newton step overshoots."""
    rng = np.random.default_rng(0)
    return unit_rows(rng, 200, 8), rng.standard_normal(200)


# --------------------------------------------------------------------------------------------
# Convergence of every solver
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["sketch", "exact", "auto"])
def test_reaches_relative_loss_1e6(over_fits, over_problem, solver):
    est = over_fits(solver)
    X, y = over_problem
    curve = est.loss_curve_
    W0, a0 = initial_weights(X, y, M_OVER, random_state=0)
    assert np.array_equal(est.a_, a0)
    assert curve[0] == pytest.approx(ref_loss(ref_predict(X, W0, a0), y), rel=1e-12)
    assert curve[-1] <= 1e-6 * curve[0], f"{solver}: {curve[-1] / curve[0]:.3g} of the initial loss"
    assert est.n_iter_ == len(est.history_) == len(curve) - 1 >= 1
    assert est.solver_ in ("sketch", "exact", "cg") if solver == "auto" else est.solver_ == solver
    # The last loss is the loss of the published weights.
    assert ref_loss(ref_predict(X, est.W_, est.a_), y) == pytest.approx(curve[-1], rel=1e-9, abs=1e-300)


def test_auto_reports_its_choice(over_fits):
    est = over_fits("auto")
    assert est.solver_ in ("sketch", "exact", "cg")
    reason = est.history_[0]["reason"]
    assert isinstance(reason, str) and reason
    assert all(h["solver"] == est.solver_ for h in est.history_)
    assert all("reason" not in h for h in est.history_[1:])


def test_gd_decreases_the_loss_strictly():
    X, y = teacher_problem(8, 200, 8)
    est = sg.GaussNewtonRegressor(512, solver="gd", max_iter=10, random_state=0, n_threads=1).fit(X, y)
    curve = np.array(est.loss_curve_)
    assert est.solver_ == "gd"
    assert est.n_iter_ == 10 and len(curve) == 11
    assert np.all(np.diff(curve) < 0), curve
    assert all(h["solver"] == "gd" and h["cg_iterations"] == 0 for h in est.history_)


def test_score_on_training_data(over_fits, over_problem):
    X, y = over_problem
    est = over_fits("auto")
    score = est.score(X, y)
    assert score >= 0.99
    assert score == pytest.approx(ref_r2(ref_predict(X, est.W_, est.a_), y), rel=1e-12)


# --------------------------------------------------------------------------------------------
# The solvers agree on the Gauss-Newton step
# --------------------------------------------------------------------------------------------


def initial_weights(X, y, width, random_state):
    """W0, a0 of a fit with this random_state (a fit with max_iter=0 takes no step)."""
    est = sg.GaussNewtonRegressor(width, max_iter=0, random_state=random_state, n_threads=1).fit(X, y)
    assert est.n_iter_ == 0 and len(est.loss_curve_) == 1 and est.history_ == []
    return est.W_, est.a_


@pytest.mark.parametrize("damping", [0.0, 1e-3])
def test_first_step_direction_agrees_across_methods(over_problem, damping):
    X, y = over_problem
    W0, a0 = initial_weights(X, y, M_OVER, random_state=0)
    J = sg.ReLUJacobian(X, W0, a0, n_threads=1)
    r = J.forward() - y
    np.testing.assert_allclose(J.forward(), ref_predict(X, W0, a0), rtol=1e-12, atol=1e-12)
    directions = {}
    for method in ("sketch", "cg", "exact"):
        res = sg.solve_gn(J, r, method=method, damping=damping, tol=1e-12, n_threads=1)
        assert res.converged, f"{method}: residual {res.residual:.3g}, {res.message}"
        # The solution solves the system (checked with NumPy, not the solver's own residual).
        JJt_g = J.matvec(J.rmatvec(res.g)) + damping * res.g
        assert rel_err(JJt_g, r) <= 1e-9, method
        directions[method] = J.rmatvec(res.g)
    reference = directions["exact"]
    assert np.linalg.norm(reference) > 0
    for method in ("sketch", "cg"):
        err = rel_err(directions[method], reference)
        assert err <= 1e-6, f"{method} vs exact: relative difference {err:.3g}"


@pytest.mark.parametrize("solver", ["sketch", "cg"])
def test_estimator_first_step_matches_exact_with_tight_inner_solve(over_problem, monkeypatch, solver):
    """With the inner tolerance forced to 1e-12 (the estimator's forcing term is 0.1 on step 1 by
    design, and no parameter exposes it), one step of "sketch"/"cg" is the "exact" step."""
    X, y = over_problem
    monkeypatch.setattr(estimator_module, "FORCING_MAX", 1e-12)
    monkeypatch.setattr(estimator_module, "FORCING_MIN", 1e-12)
    W0, _ = initial_weights(X, y, M_OVER, random_state=0)
    fits = {}
    for s in ("exact", solver):
        fits[s] = sg.GaussNewtonRegressor(M_OVER, solver=s, damping=1e-3, max_iter=1, random_state=0,
                                          n_threads=1).fit(X, y)
        assert fits[s].n_iter_ == 1
    exact, other = fits["exact"], fits[solver]
    assert other.history_[0]["step_size"] == exact.history_[0]["step_size"]
    assert other.history_[0]["cg_iterations"] > 0
    assert rel_err(other.W_, exact.W_) <= 1e-6
    # Stronger: the steps themselves (W_ - W0) agree, not only the weights they are added to.
    assert rel_err(other.W_ - W0, exact.W_ - W0) <= 1e-6
    assert other.loss_curve_[-1] == pytest.approx(exact.loss_curve_[-1], rel=1e-6)


def test_estimator_first_sketch_step_within_inexact_newton_bound(over_problem):
    """With its default (loose) inner tolerance eta, the first "sketch" step differs from the "exact"
    one by at most eta ||r|| max_i sigma_i / (sigma_i^2 + lambda) (J^T (J J^T + lambda I)^-1 applied to
    an inner residual of norm <= eta ||r||)."""
    X, y = over_problem
    lam = 1e-3
    W0, a0 = initial_weights(X, y, M_OVER, random_state=0)
    kwargs = dict(damping=lam, max_iter=1, random_state=0, n_threads=1)
    exact = sg.GaussNewtonRegressor(M_OVER, solver="exact", **kwargs).fit(X, y)
    sketch = sg.GaussNewtonRegressor(M_OVER, solver="sketch", **kwargs).fit(X, y)
    assert exact.history_[0]["step_size"] == sketch.history_[0]["step_size"] == 1.0
    eta = sketch.history_[0]["inner_tol"]
    assert 0 < eta <= 0.1
    J = sg.ReLUJacobian(X, W0, a0, n_threads=1)
    r_norm = np.linalg.norm(ref_predict(X, W0, a0) - y)
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(J.gram()), 0.0, None))
    bound = eta * r_norm * np.max(sigma / (sigma**2 + lam))
    diff = np.linalg.norm(sketch.W_ - exact.W_)
    assert diff <= 1.01 * bound, f"step difference {diff:.3g} > bound {bound:.3g}"


# --------------------------------------------------------------------------------------------
# scikit-learn contract
# --------------------------------------------------------------------------------------------


@parametrize_with_checks([sg.GaussNewtonRegressor(width=64, max_iter=5)])
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


def test_get_set_params_and_clone():
    def cb(est, info):
        return None

    params = dict(width=33, solver="cg", threshold=0.25, damping=1e-4, max_iter=7, tol=1e-5, sketch="srht",
                  sketch_size=400, refresh="always", line_search=False, warm_start=True, inner_tol=1e-3,
                  random_state=5,
                  n_threads=1, verbose=0, callback=cb)
    est = sg.GaussNewtonRegressor(**params)
    assert est.get_params() == params
    default = sg.GaussNewtonRegressor()
    assert default.get_params()["width"] == 1024 and default.get_params()["solver"] == "auto"
    assert default.set_params(**params) is default
    assert default.get_params() == params
    assert est.set_params(width=12, solver="exact").get_params()["width"] == 12
    assert est.get_params()["solver"] == "exact"
    with pytest.raises(ValueError):
        est.set_params(no_such_parameter=1)

    X, y = teacher_problem(1, 40, 4)
    fitted = sg.GaussNewtonRegressor(**params).fit(X, y)
    twin = clone(fitted)
    assert twin is not fitted
    assert twin.get_params() == params
    assert twin.get_params()["callback"] is cb
    assert not hasattr(twin, "W_") and not hasattr(twin, "n_iter_")
    # The clone fits to the same weights (same random_state).
    assert np.array_equal(twin.fit(X, y).W_, fitted.W_)


@pytest.mark.parametrize("solver", ["sketch", "exact", "cg", "gd"])
def test_fit_is_deterministic_for_fixed_random_state(small_problem, solver):
    X, y = small_problem
    fits = [sg.GaussNewtonRegressor(256, solver=solver, random_state=11, max_iter=4, n_threads=1).fit(X, y)
            for _ in range(2)]
    assert fits[0].n_iter_ >= 1
    assert np.array_equal(fits[0].W_, fits[1].W_)
    assert np.array_equal(fits[0].a_, fits[1].a_)
    assert fits[0].loss_curve_ == fits[1].loss_curve_
    other = sg.GaussNewtonRegressor(256, solver=solver, random_state=12, max_iter=4, n_threads=1).fit(X, y)
    assert not np.array_equal(other.W_, fits[0].W_)


@pytest.mark.parametrize("solver", ["sketch", "exact", "cg", "gd"])
def test_fit_is_identical_for_any_thread_count(solver):
    # n over one 128-row block and m over one 512-neuron block, so every thread has work.
    X, y = teacher_problem(3, 300, 8)
    steps = 2 if solver == "gd" else 3
    fits = {nt: sg.GaussNewtonRegressor(640, solver=solver, random_state=4, max_iter=steps, n_threads=nt)
            .fit(X, y) for nt in (1, 2, None)}
    ref = fits[1]
    assert ref.n_iter_ >= 1
    for nt, est in fits.items():
        assert est.n_iter_ == ref.n_iter_, nt
        assert np.array_equal(est.W_, ref.W_), (nt, rel_err(est.W_, ref.W_))
        assert est.loss_curve_ == ref.loss_curve_, nt


@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.2])
def test_predict_matches_numpy_model(small_problem, threshold):
    X, y = small_problem
    est = sg.GaussNewtonRegressor(96, solver="exact", threshold=threshold, random_state=2, max_iter=3,
                                  n_threads=1).fit(X, y)
    assert est.W_.shape == (96, X.shape[1]) and est.a_.shape == (96,)
    assert set(np.unique(est.a_)) <= {-1.0, 1.0}
    X_new = unit_rows(np.random.default_rng(99), 57, X.shape[1]) * 1.7
    pred = est.predict(X_new)
    ref = ref_predict(X_new, est.W_, est.a_, threshold)
    scale = (np.abs(X_new) @ np.abs(est.W_).T + abs(threshold)) @ np.abs(est.a_) / np.sqrt(96)
    assert pred.shape == (57,) and pred.dtype == np.float64
    assert np.all(np.abs(pred - ref) <= 1e-12 * scale)
    # Lists and float32 input are coerced.
    np.testing.assert_allclose(est.predict(X_new.tolist()), pred, rtol=0, atol=0)
    np.testing.assert_allclose(est.predict(X_new.astype(np.float32)),
                               ref_predict(X_new.astype(np.float32).astype(np.float64), est.W_, est.a_, threshold),
                               rtol=1e-10, atol=1e-12)


def test_auto_choice_is_fixed_within_a_process(small_problem):
    # solver="auto" uses speeds measured once per process: the same choice and the same weights for
    # any n_threads and any momentary load (found under the sanitizer build, where per-fit timings
    # made two identical fits of check_regressor_data_not_an_array pick different solvers).
    X, y = small_problem
    fits = [sg.GaussNewtonRegressor(128, solver="auto", max_iter=3, random_state=0, n_threads=nt).fit(X, y)
            for nt in (1, 2, 1)]
    rates = estimator_module._Calibration.get()
    assert estimator_module._Calibration.get() is rates
    assert len({f.solver_ for f in fits}) == 1
    assert all(np.array_equal(f.W_, fits[0].W_) for f in fits[1:])
    assert fits[0].history_[0]["reason"].startswith("auto")


def test_multi_output():
    # One hidden layer W shared by k outputs with their own signs a_[j]: f_j = relu(X W^T) a_[j] / sqrt m.
    X, Y = teacher_problem(5, 150, 8, n_outputs=2)
    assert abs(np.corrcoef(Y[:, 0], Y[:, 1])[0, 1]) < 0.9  # two different targets
    est = sg.GaussNewtonRegressor(512, solver="exact", random_state=1, n_threads=1).fit(X, Y)
    assert est.W_.shape == (512, 8) and est.a_.shape == (2, 512)
    assert set(np.unique(est.a_)) <= {-1.0, 1.0} and not np.array_equal(est.a_[0], est.a_[1])
    pred = est.predict(X)
    assert pred.shape == (150, 2)
    for k in range(2):
        np.testing.assert_allclose(pred[:, k], ref_predict(X, est.W_, est.a_[k]), rtol=1e-10, atol=1e-12)
        assert ref_r2(pred[:, k], Y[:, k]) >= 0.99, k
    # loss_curve_ is the total loss; its last entry is that of the published weights, and it decreases.
    assert est.loss_curve_[-1] == pytest.approx(ref_loss(pred, Y), rel=1e-9)
    assert all(b < a for a, b in zip(est.loss_curve_, est.loss_curve_[1:]))
    assert len(est.history_) == est.n_iter_ == len(est.loss_curve_) - 1
    W0, a0 = initial_weights(X, Y, 512, random_state=1)
    assert W0.shape == (512, 8) and np.array_equal(a0, est.a_)
    assert est.loss_curve_[0] == pytest.approx(ref_loss(np.stack(
        [ref_predict(X, W0, a0[k]) for k in range(2)], axis=1), Y), rel=1e-12)
    assert est.score(X, Y) >= 0.99
    # The first step against a dense NumPy reference: per-output systems with the Gram matrix that all
    # outputs share, the step sum_j J_j^T g_j, then the line search's first trial (full step).
    one = sg.GaussNewtonRegressor(512, solver="exact", damping=1e-3, line_search=False, max_iter=1,
                                  random_state=1, n_threads=1).fit(X, Y)
    Js = [dense_jacobian(X, W0, a0[k]) for k in range(2)]
    np.testing.assert_allclose(Js[0] @ Js[0].T, Js[1] @ Js[1].T, rtol=1e-12, atol=1e-12)
    G = Js[0] @ Js[0].T + 1e-3 * np.eye(150)
    R0 = np.stack([ref_predict(X, W0, a0[k]) for k in range(2)], axis=1) - Y
    step = sum(Js[k].T @ np.linalg.solve(G, R0[:, k]) for k in range(2)).reshape(512, 8)
    np.testing.assert_allclose(one.W_, W0 - step, rtol=1e-8, atol=1e-10 * np.abs(step).max())
    # Matches the sketched solver (same systems, preconditioned CG), and the same fit on 2 threads.
    sk = sg.GaussNewtonRegressor(512, solver="sketch", damping=1e-3, line_search=False, max_iter=1,
                                 inner_tol=1e-12, random_state=1, n_threads=2).fit(X, Y)
    np.testing.assert_allclose(sk.W_, one.W_, rtol=1e-7, atol=1e-9 * np.abs(step).max())
    # A single column of y as (n, 1) stays two-dimensional.
    est1 = sg.GaussNewtonRegressor(64, solver="exact", random_state=1, max_iter=2, n_threads=1).fit(X, Y[:, :1])
    assert est1.predict(X).shape == (150, 1) and est1.a_.shape == (1, 64)


def test_warm_start_continues_from_fitted_weights(small_problem):
    X, y = small_problem
    est = sg.GaussNewtonRegressor(256, solver="exact", max_iter=1, warm_start=True, random_state=0,
                                  n_threads=1).fit(X, y)
    W1, loss1 = est.W_.copy(), est.loss_curve_[-1]
    est.fit(X, y)
    assert est.loss_curve_[0] == pytest.approx(loss1, rel=1e-12)
    assert est.loss_curve_[-1] < loss1
    cold = sg.GaussNewtonRegressor(256, solver="exact", max_iter=1, random_state=0, n_threads=1).fit(X, y)
    assert np.array_equal(cold.W_, W1)
    assert not np.array_equal(est.W_, W1)


# --------------------------------------------------------------------------------------------
# Line search
# --------------------------------------------------------------------------------------------


def test_line_search_keeps_the_loss_monotone_on_a_narrow_network(narrow_problem):
    X, y = narrow_problem
    kwargs = dict(solver="exact", damping=0.0, random_state=0, max_iter=8, n_threads=1)
    # Without the line search the full step overshoots here: the loss goes up.
    full = sg.GaussNewtonRegressor(64, line_search=False, **kwargs).fit(X, y)
    assert full.history_[0]["step_size"] == 1.0
    assert full.loss_curve_[1] > full.loss_curve_[0]
    est = sg.GaussNewtonRegressor(64, **kwargs).fit(X, y)
    curve = np.array(est.loss_curve_)
    assert est.n_iter_ >= 3
    assert np.all(np.diff(curve) <= 0), curve
    assert curve[-1] < curve[0]
    sizes = np.array([h["step_size"] for h in est.history_])
    assert np.all((sizes > 0) & (sizes <= 1))
    assert np.all(np.log2(sizes) == np.round(np.log2(sizes))), sizes  # halvings of the full step
    assert sizes.min() < 1, "the line search never backtracked"
    # Every entry's loss is the loss of the model it describes: the last one, of the published weights.
    assert ref_loss(ref_predict(X, est.W_, est.a_), y) == pytest.approx(curve[-1], rel=1e-9)
    assert [h["loss"] for h in est.history_] == list(curve[1:])


# --------------------------------------------------------------------------------------------
# Callbacks, interruption, verbose output
# --------------------------------------------------------------------------------------------


def test_callback_exception_leaves_a_consistent_estimator(small_problem):
    X, y = small_problem
    calls = []

    def boom(est, info):
        calls.append(dict(info))
        if info["step"] == 3:
            raise RuntimeError("stop here")

    est = sg.GaussNewtonRegressor(256, solver="exact", tol=1e-15, max_iter=10, random_state=3, n_threads=1,
                                  callback=boom)
    with pytest.raises(RuntimeError, match="stop here"):
        est.fit(X, y)
    assert [c["step"] for c in calls] == [1, 2, 3]
    assert len(est.history_) == 3
    assert [h["step"] for h in est.history_] == [1, 2, 3]
    assert est.n_iter_ == 3
    assert len(est.loss_curve_) == 4
    assert est.loss_curve_[-1] == calls[-1]["loss"]
    assert ref_loss(est.predict(X), y) == pytest.approx(est.loss_curve_[-1], rel=1e-9)
    # The published weights are the ones after step 3: a fit of exactly 3 steps gives them.
    three = sg.GaussNewtonRegressor(256, solver="exact", tol=1e-15, max_iter=3, random_state=3,
                                    n_threads=1).fit(X, y)
    assert three.n_iter_ == 3
    assert np.array_equal(est.W_, three.W_)
    assert est.loss_curve_ == three.loss_curve_


def test_callback_info_and_returning_true_stops(small_problem):
    X, y = small_problem
    seen = []

    def stop_at_two(est, info):
        assert isinstance(est, sg.GaussNewtonRegressor)
        assert {"step", "loss", "solver", "cg_iterations", "seconds"} <= set(info)
        # The estimator already holds the accepted step when the callback runs.
        assert est.n_iter_ == info["step"] and est.loss_curve_[-1] == info["loss"]
        assert ref_loss(ref_predict(X, est.W_, est.a_), y) == pytest.approx(info["loss"], rel=1e-9)
        seen.append(info["step"])
        return info["step"] == 2

    est = sg.GaussNewtonRegressor(256, solver="sketch", tol=1e-15, max_iter=10, random_state=3, n_threads=1,
                                  callback=stop_at_two).fit(X, y)
    assert seen == [1, 2]
    assert est.n_iter_ == 2 and len(est.history_) == 2 and len(est.loss_curve_) == 3
    seconds = [h["seconds"] for h in est.history_]
    assert 0 <= seconds[0] <= seconds[1]
    # A callback returning None does not stop the fit.
    counter = []
    sg.GaussNewtonRegressor(256, solver="exact", tol=1e-15, max_iter=3, random_state=3, n_threads=1,
                            callback=lambda est, info: counter.append(info["step"])).fit(X, y)
    assert counter == [1, 2, 3]


NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@pytest.mark.parametrize("solver", ["sketch", "exact"])
def test_verbose_prints_one_line_per_step(small_problem, capsys, solver):
    X, y = small_problem
    capsys.readouterr()
    est = sg.GaussNewtonRegressor(256, solver=solver, tol=1e-15, max_iter=3, random_state=3, n_threads=1,
                                  verbose=1).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == est.n_iter_ == len(est.history_) >= 1
    for line, h in zip(lines, est.history_):
        assert solver in line
        numbers = [float(tok) for tok in NUMBER.findall(line)]
        assert h["step"] in numbers, line
        assert h["cg_iterations"] in numbers, line
        assert any(abs(v - h["loss"]) <= 1e-5 * h["loss"] for v in numbers), (line, h["loss"])
    if solver == "sketch":
        assert any(h["cg_iterations"] > 0 for h in est.history_)
    # verbose=0 prints nothing.
    sg.GaussNewtonRegressor(256, solver=solver, max_iter=2, random_state=3, n_threads=1).fit(X, y)
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------------------------
# Bad parameters and bad data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, name",
    [
        ({"width": 0}, "width"),
        ({"width": 1.5}, "width"),
        ({"width": True}, "width"),
        ({"solver": "foo"}, "solver"),
        ({"tol": 0}, "tol"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"max_iter": -1}, "max_iter"),
        ({"max_iter": 2.0}, "max_iter"),
        ({"damping": -1}, "damping"),
        ({"damping": "x"}, "damping"),
        ({"damping": float("inf")}, "damping"),
        ({"refresh": "x"}, "refresh"),
        ({"sketch": "x"}, "sketch"),
        ({"sketch_size": 0}, "sketch_size"),
        ({"callback": 3}, "callback"),
        ({"n_threads": 0}, "n_threads"),
        ({"n_threads": -2}, "n_threads"),
        ({"threshold": float("nan")}, "threshold"),
    ],
)
def test_bad_parameters_raise_at_fit(small_problem, params, name):
    X, y = small_problem
    est = sg.GaussNewtonRegressor(**{"width": 16, "max_iter": 1, **params})  # the constructor only stores
    assert est.get_params()[name] is params[name]
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b") as info:
        est.fit(X, y)
    assert not hasattr(est, "W_")
    # The message says what was given (its value, or its type for a wrong kind of object).
    given, message = params[name], str(info.value)
    assert repr(given) in message or str(given) in message or type(given).__name__ in message, message


def test_negative_damping_message_says_what_is_expected(small_problem):
    X, y = small_problem
    with pytest.raises(ValueError, match=r"damping") as info:
        sg.GaussNewtonRegressor(16, damping=-1.0).fit(X, y)
    assert re.search(r">= ?0|non-?negative", str(info.value)), str(info.value)


def test_bad_data_raises(small_problem):
    X, y = small_problem
    est = sg.GaussNewtonRegressor(16, max_iter=1)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(Xn, y)
    yn = y.copy()
    yn[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X, yn)
    yi = y.copy()
    yi[0] = np.inf
    with pytest.raises(ValueError, match="(?i)inf"):
        est.fit(X, yi)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    fitted = sg.GaussNewtonRegressor(16, max_iter=1, n_threads=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(Xn)


@pytest.mark.parametrize("which", ["y", "X"])
def test_an_overflowing_initial_loss_is_refused_clearly(which):
    # Finite data whose squared loss overflows float64: a ValueError saying so (it used to be a
    # RuntimeWarning and a silent fit of zero steps with loss inf), the estimator left consistent.
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((40, 4)), rng.standard_normal(40)
    if which == "y":
        y = y * 1e200
    else:
        X = X * 1e160  # (f ~ |X| |W|: its square overflows)
    est = sg.GaussNewtonRegressor(width=32, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (and no RuntimeWarning on the way)
        with pytest.raises(ValueError, match=r"overflows float64.*rescale X and y"):
            est.fit(X, y)
    assert est.n_iter_ == 0 and est.history_ == [] and est.W_.shape == (32, 4)
    # the same data rescaled trains
    scale = float(np.max(np.abs(y if which == "y" else X)))
    if which == "y":
        est.fit(X, y / scale)
    else:
        est.fit(X / scale, y)
    assert est.n_iter_ > 0 and est.loss_curve_[-1] < est.loss_curve_[0]
