"""The "kronecker_rows" sketch of J^T (whole rows of the Kronecker SRHT's grid): its explicit form
against a dense NumPy construction, its factored Gram (Uhat Uhat^T o X X^T) / rows against T T^T, its
quality as a preconditioner against uniform cells, the "auto" choice, threads and seeds."""

from __future__ import annotations

import numpy as np
import pytest

import sketchgn as sg
from sketchgn import _core
from conftest import rel_err
from test_jacobian import ref_jacobian
from test_solver import conditioned_problem, dense_row_sketch, make_problem, system, true_residual


def grid(m, d):
    return 1 << (m - 1).bit_length(), 1 << (d - 1).bit_length()


# (n, m, d): powers of two and not, d = 1, and d_pad > d
SHAPES = [(40, 64, 8), (33, 100, 5), (20, 64, 1), (64, 200, 13)]


@pytest.mark.parametrize("n,m,d", SHAPES)
def test_explicit_sketch_matches_dense_construction(n, m, d):
    J, _, (X, W, a) = make_problem(n, m, d, seed=3)
    _, d_pad = grid(m, d)
    rows = 5
    s = rows * d_pad
    T = _core.sketch_jacobian_transpose(J._impl, "kronecker_rows", s, 11, 1)
    ref = (dense_row_sketch(m, d, s, 11) @ ref_jacobian(X, W, a, 0.0).T).T
    assert T.shape == (n, s)
    assert rel_err(T, ref) <= 1e-13


@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("n,m,d", SHAPES)
def test_factored_gram_equals_the_gram_of_the_explicit_sketch(n, m, d, shift):
    J, _, _ = make_problem(n, m, d, seed=4)
    _, d_pad = grid(m, d)
    rows = 7
    U = _core.sketch_neuron_rows(J._impl, rows, 2, 1)
    assert U.shape == (n, rows)
    C = _core.neuron_rows_gram_upper(J._impl, U, shift, 1)
    T = _core.sketch_jacobian_transpose(J._impl, "kronecker_rows", rows * d_pad, 2, 1)
    ref = T @ T.T + shift * np.eye(n)
    upper = np.triu_indices(n)
    assert np.max(np.abs(C[upper] - ref[upper])) <= 1e-13 * np.abs(ref).max()


def test_gram_is_unbiased_over_seeds():
    # E[(S J^T)^T (S J^T)] = J J^T: the average over many seeds approaches the Gram.
    J, _, _ = make_problem(24, 64, 4, seed=6)
    G = J.gram()
    mean = np.zeros_like(G)
    seeds = 400
    for seed in range(seeds):
        C = _core.neuron_rows_gram_upper(J._impl, _core.sketch_neuron_rows(J._impl, 8, seed, 1), 0.0, 1)
        mean += np.triu(C) + np.triu(C, 1).T
    mean /= seeds
    # one sketch is ~0.3 off in relative Frobenius norm; 400 of them average to ~0.3 / 20
    one = np.triu(C) + np.triu(C, 1).T
    assert rel_err(one, G) > 0.1
    assert rel_err(mean, G) <= 0.05


def test_same_bits_for_any_thread_count_and_seed_dependence():
    J, _, _ = make_problem(300, 1024, 16, seed=8)
    U1 = _core.sketch_neuron_rows(J._impl, 100, 5, 1)
    assert np.array_equal(U1, _core.sketch_neuron_rows(J._impl, 100, 5, 2))
    assert not np.array_equal(U1, _core.sketch_neuron_rows(J._impl, 100, 6, 1))
    C1 = _core.neuron_rows_gram_upper(J._impl, U1, 0.1, 1)
    assert np.array_equal(C1, _core.neuron_rows_gram_upper(J._impl, U1, 0.1, 2))
    P1 = sg.SketchPreconditioner(J, sketch="kronecker_rows", n_threads=1)
    P2 = sg.SketchPreconditioner(J, sketch="kronecker_rows", n_threads=2)
    assert np.array_equal(P1.R, P2.R)


@pytest.mark.parametrize("target", [1e2, 1e5, 1e8])
def test_preconditions_like_uniform_cells_whatever_the_conditioning(target):
    J, r, cond = conditioned_problem(target, n=400, m=2048, d=8)
    G = system(J)
    counts = {}
    for sketch in ("kronecker", "kronecker_rows"):
        res = sg.solve_gn(J, r, sketch=sketch, tol=1e-6)
        assert res.converged and true_residual(G, res.g, r) <= 1.01e-6
        assert res.preconditioner.sketch_ == sketch
        counts[sketch] = res.iterations
    # measured: the same counts within a few iterations (400 samples, 200 rows of 2048)
    assert counts["kronecker_rows"] <= 60
    assert counts["kronecker_rows"] <= counts["kronecker"] + 5, counts


def test_auto_chooses_rows_when_there_are_enough():
    rng = np.random.default_rng(0)
    # s = 4n = 2000, d_pad = 8: 250 rows -> "kronecker_rows"
    J = sg.ReLUJacobian(rng.standard_normal((500, 7)), rng.standard_normal((1024, 7)), np.ones(1024))
    P = sg.SketchPreconditioner(J)
    assert P.sketch == "auto" and P.sketch_ == "kronecker_rows" and P.sketch_size == 2000
    # s = 4n = 400, d_pad = 32: 12 rows -> uniform cells
    J = sg.ReLUJacobian(rng.standard_normal((100, 32)), rng.standard_normal((256, 32)), np.ones(256))
    assert sg.SketchPreconditioner(J).sketch_ == "kronecker"
    # the estimator and solve_gn take "auto" too
    assert sg.solve_gn(J, np.ones(100), sketch="auto").preconditioner.sketch_ == "kronecker"


def test_sketch_size_is_rounded_to_whole_rows_and_bounded():
    J, _, _ = make_problem(30, 64, 5, seed=2)  # d_pad = 8, grid 64 x 8 = 512 cells
    P = sg.SketchPreconditioner(J, sketch="kronecker_rows", sketch_size=45)
    assert P.sketch_size == 48
    assert sg.SketchPreconditioner(J, sketch="kronecker_rows", sketch_size=512).sketch_size == 512
    with pytest.raises(ValueError, match="sketch_size must be <= 512"):
        sg.SketchPreconditioner(J, sketch="kronecker_rows", sketch_size=513)
    with pytest.raises(ValueError, match="sketch_size must be >= n"):
        sg.SketchPreconditioner(J, sketch="kronecker_rows", sketch_size=29)


@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_householder_fallback_forms_the_same_sketch(damping):
    # QR needs the sketch itself: formed explicitly from the same seed, it factors the same Gram.
    J, _, _ = make_problem(120, 256, 8, seed=9)
    Pq = sg.SketchPreconditioner(J, sketch="kronecker_rows", damping=damping, seed=4, factorization="qr")
    Pc = sg.SketchPreconditioner(J, sketch="kronecker_rows", damping=damping, seed=4, factorization="cholqr")
    assert Pq.factorization_ == "qr" and Pc.factorization_ == "cholqr"
    assert rel_err(Pq.R.T @ Pq.R, Pc.R.T @ Pc.R) <= 1e-10


def test_bad_binding_arguments_are_refused():
    J, _, _ = make_problem(10, 64, 4, seed=1)
    with pytest.raises(ValueError, match="rows"):
        _core.sketch_neuron_rows(J._impl, 65, 0, 1)
    with pytest.raises(ValueError, match="rows"):
        _core.sketch_neuron_rows(J._impl, 0, 0, 1)
    with pytest.raises(ValueError, match="multiple of d_pad"):
        _core.sketch_jacobian_transpose(J._impl, "kronecker_rows", 6, 0, 1)
    with pytest.raises(ValueError, match="Uhat"):
        _core.neuron_rows_gram_upper(J._impl, np.ones((11, 3)), 0.0, 1)
    with pytest.raises(ValueError, match="sketch must be one of"):
        sg.SketchPreconditioner(J, sketch="rows")
    with pytest.raises(ValueError, match="sketch must be one of"):
        sg.GaussNewtonRegressor(64, sketch="rows").fit(np.ones((10, 4)), np.ones(10))
