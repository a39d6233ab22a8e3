"""Pickle and joblib round trips: a fitted estimator predicts the same, a preconditioner has the same R
and solves the same system the same way, sketches are the same matrices; a ReLUJacobian refuses with a
clear TypeError."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest

import sketchgn as sg


def unit_rows(Z):
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = unit_rows(rng.standard_normal((150, 6)))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    return X, y


def pickle_round_trip(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def joblib_round_trip(obj, path):
    joblib.dump(obj, path)
    return joblib.load(path)


ROUND_TRIPS = ["pickle", "joblib", "deepcopy"]


def round_trip(kind, obj, tmp_path):
    if kind == "pickle":
        return pickle_round_trip(obj)
    if kind == "joblib":
        return joblib_round_trip(obj, tmp_path / "obj.joblib")
    return copy.deepcopy(obj)


@pytest.mark.parametrize("kind", ROUND_TRIPS)
@pytest.mark.parametrize("solver", ["sketch", "exact", "cg", "gd"])
def test_fitted_estimator(data, tmp_path, kind, solver):
    X, y = data
    est = sg.GaussNewtonRegressor(256, solver=solver, max_iter=4, random_state=0, n_threads=1).fit(X, y)
    other = round_trip(kind, est, tmp_path)
    assert other is not est
    assert np.array_equal(other.predict(X), est.predict(X))
    assert other.score(X, y) == est.score(X, y)
    for attr in ("W_", "a_"):
        assert np.array_equal(getattr(other, attr), getattr(est, attr))
    assert other.n_iter_ == est.n_iter_ and other.loss_curve_ == est.loss_curve_
    assert other.history_ == est.history_ and other.solver_ == est.solver_
    assert other.get_params() == est.get_params()
    # the copy is a working estimator: it refits to the same result
    assert np.array_equal(other.fit(X, y).W_, est.fit(X, y).W_)


def test_multi_output_and_unfitted_estimators(data, tmp_path):
    X, y = data
    Y = np.stack([y, X[:, 2]], axis=1)
    est = sg.GaussNewtonRegressor(128, solver="exact", max_iter=3, random_state=0, n_threads=1).fit(X, Y)
    other = joblib_round_trip(est, tmp_path / "multi.joblib")
    assert np.array_equal(other.predict(X), est.predict(X))
    unfitted = pickle_round_trip(sg.GaussNewtonRegressor(64, solver="cg", random_state=3))
    assert unfitted.get_params() == sg.GaussNewtonRegressor(64, solver="cg", random_state=3).get_params()
    assert np.array_equal(unfitted.fit(X, y).predict(X),
                          sg.GaussNewtonRegressor(64, solver="cg", random_state=3).fit(X, y).predict(X))


CHILD_PREDICT = textwrap.dedent(
    """
    import json, sys
    import joblib, numpy as np
    est = joblib.load(sys.argv[1])
    X = np.load(sys.argv[2])
    print(json.dumps(est.predict(X).tolist()))
    """
)


def test_estimator_loaded_in_a_fresh_interpreter(data, tmp_path):
    X, y = data
    est = sg.GaussNewtonRegressor(256, solver="sketch", max_iter=3, random_state=0, n_threads=1).fit(X, y)
    joblib.dump(est, tmp_path / "est.joblib")
    np.save(tmp_path / "X.npy", X)
    proc = subprocess.run([sys.executable, "-c", CHILD_PREDICT, str(tmp_path / "est.joblib"),
                           str(tmp_path / "X.npy")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.array(json.loads(proc.stdout)), est.predict(X))


@pytest.mark.parametrize("kind", ROUND_TRIPS)
@pytest.mark.parametrize("sketch", ["auto", "kronecker", "kronecker_rows", "srht", "gaussian"])
def test_preconditioner(data, tmp_path, kind, sketch):
    X, _ = data
    rng = np.random.default_rng(12)
    W, a = rng.standard_normal((300, 6)), rng.choice([-1.0, 1.0], 300)
    J = sg.ReLUJacobian(X, W, a, n_threads=1)
    P = sg.SketchPreconditioner(J, sketch=sketch, damping=1e-4, seed=7, n_threads=1)
    Q = round_trip(kind, P, tmp_path)
    assert np.array_equal(Q.R, P.R)
    assert (Q.sketch, Q.sketch_size, Q.damping, Q.seed) == (P.sketch, P.sketch_size, P.damping, P.seed)
    r = rng.standard_normal(J.n)
    a_res = sg.solve_gn(J, r, damping=1e-4, preconditioner=P, tol=1e-10, n_threads=1)
    b_res = sg.solve_gn(J, r, damping=1e-4, preconditioner=Q, tol=1e-10, n_threads=1)
    assert b_res.converged and b_res.preconditioner is Q
    assert np.array_equal(b_res.g, a_res.g) and b_res.iterations == a_res.iterations
    assert np.array_equal(Q.solve(r), P.solve(r)) and np.array_equal(Q.solve_transpose(r), P.solve_transpose(r))
    # and refreshing the copy re-sketches exactly like the original (same seed and settings)
    assert np.array_equal(Q.refresh(J).R, P.refresh(J).R)


def test_solve_result(data, tmp_path):
    X, _ = data
    rng = np.random.default_rng(13)
    J = sg.ReLUJacobian(X, rng.standard_normal((300, 6)), rng.choice([-1.0, 1.0], 300), n_threads=1)
    res = sg.solve_gn(J, rng.standard_normal(J.n), n_threads=1)
    other = pickle_round_trip(res)
    assert np.array_equal(other.g, res.g) and other.residual == res.residual
    assert np.array_equal(other.preconditioner.R, res.preconditioner.R)


@pytest.mark.parametrize("kind", ROUND_TRIPS)
def test_srht(tmp_path, kind):
    for n_in, n_out, seed in [(1, 1, 0), (100, 16, 3), (1000, 1024, 2**64 - 1)]:
        S = sg.SRHT(n_in, n_out, seed=seed)
        T = round_trip(kind, S, tmp_path)
        assert T.shape == S.shape and repr(T) == repr(S)
        assert np.array_equal(T.to_dense(), S.to_dense())
    gen = sg.SRHT(300, 40, seed=np.random.default_rng(5))  # a Generator seed is stored as the int drawn
    assert np.array_equal(round_trip(kind, gen, tmp_path).to_dense(), gen.to_dense())


@pytest.mark.parametrize("kind", ROUND_TRIPS)
def test_kronecker_srht(tmp_path, kind):
    for m, d, n_out, seed in [(1, 1, 1, 0), (20, 5, 64, 9), (64, 8, 512, 2**63)]:
        S = sg.KroneckerSRHT(m, d, n_out, seed=seed)
        T = round_trip(kind, S, tmp_path)
        assert T.shape == S.shape and repr(T) == repr(S)
        assert np.array_equal(T.to_dense(), S.to_dense())
        U, X = np.random.default_rng(1).standard_normal((3, m)), np.random.default_rng(2).standard_normal((3, d))
        assert np.array_equal(T.apply_kron(U, X), S.apply_kron(U, X))


@pytest.mark.parametrize("kind", ROUND_TRIPS)
def test_relu_jacobian_refuses_clearly(data, tmp_path, kind):
    X, _ = data
    J = sg.ReLUJacobian(X, np.ones((4, 6)), np.ones(4))
    with pytest.raises(TypeError, match=r"ReLUJacobian.*(pickle|copied)|(pickle|copied).*ReLUJacobian"):
        round_trip(kind, J, tmp_path)
    with pytest.raises(TypeError, match="ReLUJacobian"):
        pickle.dumps({"J": J})  # inside a container too
