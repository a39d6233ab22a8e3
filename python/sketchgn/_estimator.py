"""GaussNewtonRegressor: a scikit-learn estimator training wide two-layer ReLU networks."""

from __future__ import annotations

import math
import numbers
import sys
import time

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _core
from ._jacobian import ReLUJacobian
from ._solve import SKETCHES, SketchPreconditioner, _grid, _resolve_sketch, _solve_exact_columns, solve_gn
from ._validation import resolve_n_threads

__all__ = ["GaussNewtonRegressor"]

SOLVERS = ("auto", "sketch", "exact", "cg", "gd")

# Inner (CG) tolerance of an inexact Gauss-Newton step: eta_k = clip(||r_k|| / ||r_0||, lo, hi) -- loose
# while far from the solution, tightening as the residual falls (inexact Newton, Eisenstat-Walker).
FORCING_MAX = 0.1
FORCING_MIN = 1e-10
# Refresh the reused preconditioner when a solve takes more than this many CG iterations and more
# than twice as many as the first solve with the current R.
REFRESH_MIN_ITERATIONS = 25
# Levenberg-Marquardt damping: initial value relative to the mean diagonal of J J^T, and the ratio
# thresholds (actual / predicted decrease) that shrink or grow it.
DAMPING_INITIAL = 1e-6
DAMPING_SHRINK, DAMPING_GROW = 0.75, 0.25
# Backtracking line search: halve the step at most this many times.
LINE_SEARCH_HALVINGS = 30


def _forward(X, W, a, threshold, n_threads):
    return ReLUJacobian(X, W, a, threshold=threshold, n_threads=n_threads).forward()


class _Calibration:
    """Speeds of this machine's kernels for solver='auto', measured once per process on fixed small
    problems with every core: the choice of solver is then a function of the problem's shape alone
    within a process, whatever n_threads or the noise of the moment (two fits with the same
    random_state choose the same solver and give the same weights)."""

    rates = None

    @classmethod
    def get(cls):
        if cls.rates is None:
            rng = np.random.default_rng(0)
            n, m, d = 512, 2048, 32
            X = rng.standard_normal((n, d))
            J = ReLUJacobian(X, rng.standard_normal((m, d)), rng.choice([-1.0, 1.0], m))
            u = np.ones(n)

            def best(fn):
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                return max(min(times), 1e-9)

            k = 384
            A = rng.standard_normal((2 * k, k))
            A32 = A.astype(np.float32)
            cls.rates = {
                # J^T u then J v: 4 n m d flops (dense path)
                "products": 4 * n * m * d / best(lambda: J.matvec(J.rmatvec(u))),
                # the same pair in float32 (the inner iterations of solve_gn's mixed precision)
                "products_f32": 4 * n * m * d / best(lambda: _core.gram_apply_f32(J._impl, u, resolve_n_threads(None))),
                # the Gram by popcounts: n^2 m bit operations (plus an n^2 d GEMM)
                "gram": n * n * m / best(J.gram),
                # dense LAPACK/BLAS flop rate (SYRK of a 2k x k matrix: 2 k^3 flops)
                "blas": 2 * k * k * k / best(lambda: scipy.linalg.blas.dsyrk(1.0, A, trans=1)),
                # the same in float32 (the estimator's preconditioner is factored in float32)
                "blas_f32": 2 * k * k * k / best(lambda: scipy.linalg.blas.ssyrk(1.0, A32, trans=1)),
            }
        return cls.rates


class GaussNewtonRegressor(RegressorMixin, BaseEstimator):
    """Two-layer ReLU network trained by (sketch-preconditioned) Gauss-Newton.

    The model is ``f(W, x) = (1/sqrt(m)) sum_r a_r relu(w_r . x - threshold)`` with ``m = width``,
    ``W`` (m, d) trained from ``W ~ N(0, I)`` and ``a`` in {-1, +1}^m fixed at initialisation (van den
    Brand, Peng, Song and Weinstein, ITCS 2021). Each step solves ``(J J^T + damping I) g = f - y``
    and moves ``W <- W - t J^T g`` with a backtracking line search on the loss
    ``1/2 ||f(W, X) - y||^2`` (so it never increases).

    Parameters
    ----------
    width : int, default 1024
        Number of hidden neurons m. The method is built for wide networks (m d >> n).
    solver : {"auto", "sketch", "exact", "cg", "gd"}, default "auto"
        How each Gauss-Newton system is solved: "sketch" (CG preconditioned by a sketch, reused
        across steps; per step O(k m n d)), "exact" (Gram matrix + Cholesky; O(n^2 m / 64 + n^3)),
        "cg" (plain CG), or "gd" (full-batch gradient descent with step 1 / lambda_max(J J^T), the
        first-order baseline). "auto" picks among "exact", "sketch" and "cg" from n, m, d, the
        density of the pattern and the measured speed of this machine; ``solver_`` says which ran and
        ``history_[0]["reason"]`` why. The speeds are measured once per process, so within a process
        the choice depends on the problem alone (not on n_threads or momentary load); for results
        reproducible across machines, name the solver.
    threshold : float, default 0.0
        ReLU shift b (b > 0 makes the activation pattern sparse).
    damping : float or "auto", default "auto"
        Levenberg-Marquardt term. "auto" starts tiny and adapts it from the ratio of actual to
        predicted decrease.
    max_iter : int, default 50
        Gauss-Newton steps at most.
    tol : float, default 1e-6
        Stop when the loss is at most ``tol`` times the initial loss, or when a step decreases the
        loss by less than ``tol * 1e-6`` relative (stagnation).
    sketch : {"auto", "kronecker", "kronecker_rows", "srht", "gaussian"}, default "auto"
        The sketch of :class:`SketchPreconditioner` ("auto": whole rows of the Kronecker grid when
        the sketch has at least 128 of them, which makes its Gram d times cheaper, else uniform cells).
    sketch_size : int, optional
        Rows of the sketch (default: SketchPreconditioner's, 4 n).
    refresh : "auto", "always" or "never", default "auto"
        "auto" re-sketches the preconditioner only when CG slows down (counted in ``history_``).
    line_search : bool, default True
    warm_start : bool, default False
        Continue from the fitted weights on the next ``fit`` (same shapes).
    inner_tol : float, optional
        Relative residual of the inner (CG) solves. Default: inexact Newton, ``||r_k|| / ||r_0||``
        clipped to [1e-10, 0.1] -- loose far from the solution, tight near it -- but never below
        ``0.5 sqrt(tol) ||r_0|| / ||r_k||`` (up to 0.1): the last step need not solve much past the
        loss at which the fit stops.
    random_state : int, RandomState or None
    n_threads : int or None
    verbose : int, default 0
        1 prints one line per step.
    callback : callable, optional
        ``callback(estimator, info)`` after every accepted step, ``info`` holding ``step``,
        ``loss``, ``solver``, ``cg_iterations``, ``seconds``; returning True stops the fit.

    Attributes
    ----------
    W_ : ndarray (m, d)
        The hidden layer (shared by all outputs).
    a_ : ndarray (m,), or (k, m) for k outputs
        The output weights, in {-1, +1}, fixed at initialisation as in the paper.
    n_iter_ : int
        Accepted Gauss-Newton steps.
    loss_curve_ : list of float
        Loss (summed over outputs) before the first step and after each accepted step.
    history_ : list of dict
        Per step: step, loss, solver, cg_iterations (summed over outputs), seconds, step_seconds,
        step_size, damping, inner_tol, refreshes, predicted_decrease; the first also "reason".
    solver_ : str
    n_features_in_ : int

    Notes
    -----
    Multi-output targets ``y`` of shape (n, k) train one hidden layer ``W`` shared by k outputs
    ``f_j = (1/sqrt m) sum_r a_[j, r] relu(w_r . x - b)``. Since ``a`` is +-1, every output's Jacobian
    has the same Gram matrix ``J J^T``: each step solves the k per-output systems with one Gram
    matrix and Cholesky ("exact") or one preconditioner ("sketch") and steps along
    ``sum_j J_j^T g_j`` (the block-diagonal part of the full Gauss-Newton system, whose coupling
    blocks are O(1/sqrt m); the line search on the total loss keeps each step a decrease).
    The paper assumes unit-norm rows of X; normalising them is left to the user (a preprocessing
    choice).
    """

    def __init__(self, width=1024, *, solver="auto", threshold=0.0, damping="auto", max_iter=50, tol=1e-6,
                 sketch="auto", sketch_size=None, refresh="auto", line_search=True, warm_start=False,
                 inner_tol=None, random_state=None, n_threads=None, verbose=0, callback=None):
        self.width = width
        self.solver = solver
        self.threshold = threshold
        self.damping = damping
        self.max_iter = max_iter
        self.tol = tol
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.refresh = refresh
        self.line_search = line_search
        self.warm_start = warm_start
        self.inner_tol = inner_tol
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose
        self.callback = callback

    # ------------------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _check_params(self):
        def integer(name, minimum):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
            if v < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {v}")
            return int(v)

        def real(name, *, lower=None, strict=False):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
            v = float(v)
            bound = "" if lower is None else f" and {'>' if strict else '>='} {lower}"
            if not math.isfinite(v) or (lower is not None and (v <= lower if strict else v < lower)):
                raise ValueError(f"{name} must be finite{bound}, got {v}")
            return v

        width = integer("width", 1)
        max_iter = integer("max_iter", 0)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        threshold = real("threshold")
        tol = real("tol", lower=0.0, strict=True)
        if isinstance(self.damping, str):
            if self.damping != "auto":
                raise ValueError(f"damping must be 'auto' or a float >= 0, got {self.damping!r}")
            damping = None
        else:
            damping = real("damping", lower=0.0)
        if self.refresh not in ("auto", "always", "never"):
            raise ValueError(f"refresh must be 'auto', 'always' or 'never', got {self.refresh!r}")
        if not isinstance(self.sketch, str) or self.sketch not in SKETCHES:
            raise ValueError(f"sketch must be one of {SKETCHES}, got {self.sketch!r}")
        if self.sketch_size is not None:
            integer("sketch_size", 1)
        if self.inner_tol is not None:
            inner = real("inner_tol", lower=0.0, strict=True)
            if inner >= 1.0:
                raise ValueError(f"inner_tol must be < 1 (a relative residual), got {inner}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable, got {type(self.callback).__name__}")
        nt = resolve_n_threads(self.n_threads)
        return width, max_iter, threshold, tol, damping, nt

    # ------------------------------------------------------------------------------------------
    def fit(self, X, y):
        """Train on X (n, d) and y (n,) or (n, k). Returns self."""
        width, max_iter, threshold, tol, damping, nt = self._check_params()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64,
                             reset=not (self.warm_start and hasattr(self, "W_")))
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if not np.all(np.isfinite(y)):  # (object / string targets can carry inf past validate_data)
            raise ValueError("y must not contain NaN or Inf")
        single = y.ndim == 1
        Y = y[:, None] if single else y
        n, d = X.shape
        k = Y.shape[1]
        rng = check_random_state(self.random_state)

        if self.warm_start and hasattr(self, "W_") and self._shapes_match(width, d, k, single):
            W = np.array(self.W_, dtype=np.float64)
            A = np.array(self.a_, dtype=np.float64).reshape(k, width)
        else:
            W = rng.standard_normal((width, d))
            A = rng.choice(np.array([-1.0, 1.0]), size=(k, width))

        solver = self.solver
        reason = f"solver={solver!r} requested"
        if solver == "auto":
            solver, reason = self._choose_solver(X, W, A[0], threshold, nt)
        self.solver_ = solver

        # Attributes are committed after every accepted step, so that an exception or Ctrl-C in the
        # middle of a fit leaves a consistent estimator (the last accepted weights and their history).
        self.history_ = []
        self.loss_curve_ = []
        self.n_iter_ = 0
        self._publish(W, A, single)
        self._fit(X, Y, W, A, single, solver, reason, max_iter, threshold, tol, damping, nt)
        return self

    def _shapes_match(self, width, d, k, single):
        expected_a = (width,) if single else (k, width)
        return np.shape(self.W_) == (width, d) and np.shape(self.a_) == expected_a

    def _publish(self, W, A, single):
        self.W_ = W.copy()
        self.a_ = A[0].copy() if single else A.copy()

    def _choose_solver(self, X, W, a, threshold, nt):
        """Cost model of DESIGN.md section 6 with this machine's calibrated kernel speeds."""
        n, d = X.shape
        m = W.shape[0]
        if m * d < n:
            return "exact", f"auto: m d = {m * d} < n = {n}, the sketch cannot precondition"
        rates = _Calibration.get()
        J = ReLUJacobian(X, W, a, threshold=threshold, n_threads=nt)
        density = J.density
        # the sparse path does ~density of the dense work at about a third of its rate
        work = min(1.0, 3.0 * density) if density < 0.2 else 1.0
        t_pair = 4 * n * m * d * work / rates["products"]
        # dense patterns: the CG iterations run with float32 products (mixed precision), plus about two
        # float64 pairs per solve for the refinement residuals
        t_iteration = 4 * n * m * d / rates["products_f32"] if work == 1.0 else t_pair
        t_gram = n * n * m / rates["gram"] + 2 * n * n * d / rates["blas"]
        s = self.sketch_size or 4 * n
        exact_step = t_gram + (n**3 / 3) / rates["blas"]
        # the Gram of the sketch: a float32 SYRK of n x (s / d_pad) for whole grid rows (plus the
        # Hadamard product with X X^T), or a float64 one of n x s for an explicit sketch; its Cholesky
        # in float32 (precision="single"; an ill-conditioned Gram is factored again in float64, which
        # this model does not foresee)
        if _resolve_sketch(self.sketch, J, s) == "kronecker_rows":
            t_sketch_gram = (s / _grid(J)[1] + d) * n * n / rates["blas_f32"]
        else:
            t_sketch_gram = s * n * n / rates["blas"]
        build = t_sketch_gram + (n**3 / 3) / rates["blas_f32"] + 2 * t_pair
        cg_iterations = 15
        steps = 8
        sketch_total = build * 2 + steps * (cg_iterations * t_iteration + 2 * t_pair)
        exact_total = steps * exact_step
        estimate = f"estimated exact {exact_total:.3g} s vs sketch {sketch_total:.3g} s over {steps} steps"
        if exact_total <= sketch_total:
            return "exact", f"auto: {estimate}"
        return "sketch", f"auto: {estimate}"

    @staticmethod
    def _evaluate(X, W, A, threshold, nt, Y):
        """(Jacobians, residuals (n, k), loss): one ReLUJacobian per output (they share the pattern
        of W; J_j differs from J_0 only by the signs a_j * a_0 of its neurons)."""
        Js = [ReLUJacobian(X, W, a, threshold=threshold, n_threads=nt) for a in A]
        with np.errstate(over="ignore", invalid="ignore"):  # (an overflowing loss is inf: refused or not accepted)
            Rs = np.stack([J.forward() for J in Js], axis=1) - Y
            return Js, Rs, 0.5 * float(np.sum(Rs * Rs))

    @staticmethod
    def _sum_rmatvec(Js, U):
        """sum_j J_j^T U[:, j]: the step in W from per-output vectors (residuals or GN solutions)."""
        direction = Js[0].rmatvec(U[:, 0])
        for j in range(1, len(Js)):
            direction += Js[j].rmatvec(U[:, j])
        return direction

    def _fit(self, X, Y, W, A, single, solver, reason, max_iter, threshold, tol, damping, nt):
        """Gauss-Newton on W for the k outputs f_j = (1/sqrt m) sum_r A[j, r] relu(w_r . x - b).

        With A in {-1, +1}, J_j J_j^T = ((D D^T) o (X X^T)) / m is the same matrix for every output: the
        k per-output systems (J_j J_j^T + damping I) g_j = r_j share one Gram matrix (solver "exact")
        or one preconditioner ("sketch"), and the step is W -= t sum_j J_j^T g_j. (The coupling blocks
        J_i J_j^T of the full block system are sums of random signs, O(1/sqrt m) relative: they are
        left out, and the line search on the total loss keeps every step a decrease.)
        """
        k = Y.shape[1]
        t_start = time.perf_counter()
        Js, Rs, loss = self._evaluate(X, W, A, threshold, nt, Y)
        if not math.isfinite(loss):
            # (the weights published so far are the initial ones, with an empty history: consistent)
            raise ValueError(
                f"the loss 1/2 ||f(X) - y||^2 at the initial weights overflows float64 (largest |y| "
                f"{float(np.max(np.abs(Y))):.3g}, largest |X| {float(np.max(np.abs(X))):.3g}): rescale X and y, "
                f"e.g. with sklearn.preprocessing.StandardScaler"
            )
        J = Js[0]
        loss0 = loss
        self.loss_curve_ = [loss]
        lam = damping
        if lam is None:
            mean_diag = float(np.mean(np.einsum("ij,ij->i", X, X))) * max(J.density, 1e-3)
            lam = DAMPING_INITIAL * max(mean_diag, np.finfo(float).tiny)
        P = None
        P_iterations = None
        refreshes = 0
        G_prev, r_norm_prev = None, None
        r_norm0 = math.sqrt(2 * loss0)
        for step in range(1, max_iter + 1):
            if loss <= tol * loss0 or loss == 0.0:
                break
            t_step = time.perf_counter()
            r_norm = math.sqrt(2 * loss)
            if self.inner_tol is not None:
                eta = float(self.inner_tol)
            else:
                # ||r_k|| / ||r_0||, with the safeguard against oversolving the last step (Kelley,
                # "Solving Nonlinear Equations with Newton's Method", 2003, sec. 3.2.3): the fit stops
                # once ||r|| <= sqrt(tol) ||r_0||, so no inner solve needs to reduce ||r|| far below that.
                # (r_norm and r_norm0 > 0 here: the loop ends at loss 0)
                eta = min(FORCING_MAX, max(FORCING_MIN, r_norm / r_norm0, 0.5 * math.sqrt(tol) * r_norm0 / r_norm))
            cg_iterations = 0
            refreshed = False
            if solver == "gd":
                direction = self._sum_rmatvec(Js, Rs)
                direction *= 1.0 / (k * self._largest_eigenvalue(J))
            else:
                X0 = None
                if G_prev is not None and r_norm_prev:
                    X0 = G_prev * (r_norm / r_norm_prev)
                if solver == "exact":
                    results = _solve_exact_columns(J, Rs, lam, eta, nt, with_products=k == 1)
                else:
                    if solver == "sketch" and (P is None or self.refresh == "always"):
                        P = SketchPreconditioner(J, sketch=self.sketch, sketch_size=self.sketch_size, damping=lam,
                                                 seed=step, n_threads=nt, precision="single")
                        P_iterations = None
                        refreshed = True

                    def solve_all():
                        return [solve_gn(J, Rs[:, j], method=solver, damping=lam, tol=eta, preconditioner=P,
                                         x0=None if X0 is None else X0[:, j], n_threads=nt,
                                         _with_products=k == 1)
                                for j in range(k)]

                    results = solve_all()
                    worst = max(res.iterations for res in results)
                    if (solver == "sketch" and self.refresh == "auto" and not refreshed
                            and worst > REFRESH_MIN_ITERATIONS and P_iterations is not None
                            and worst > 2 * P_iterations):
                        P.refresh(J)
                        refreshed = True
                        results = solve_all()
                    if solver == "sketch" and (P_iterations is None or refreshed):
                        P_iterations = max(max(res.iterations for res in results), 1)
                refreshes += int(refreshed and step > 1)
                cg_iterations = sum(res.iterations for res in results)
                G = np.stack([res.g for res in results], axis=1)
                G_prev, r_norm_prev = G, r_norm
                if k == 1:
                    # J^T g and J J^T g: the products the solve's last residual check took of its g
                    # (bitwise what J.rmatvec and J.matvec give: the step costs no products beyond
                    # the solve's). (Several outputs: each system is solved with J_0, whose Gram they
                    # share, and J_0^T g_j is not J_j^T g_j.)
                    direction, JD = results[0]._products[0], results[0]._products[1][:, None]
                else:
                    direction = self._sum_rmatvec(Js, G)
            if solver == "gd" or k > 1:
                # Gauss-Newton model of the loss along the step: m(t) = 1/2 sum_j ||r_j - t J_j d||^2.
                JD = np.stack([Jj.matvec(direction) for Jj in Js], axis=1)
            slope, curvature = float(np.sum(Rs * JD)), float(np.sum(JD * JD))
            predicted = slope - 0.5 * curvature  # m(0) - m(1)
            t = 1.0
            accepted = False
            for _ in range(LINE_SEARCH_HALVINGS + 1):
                W_try = W - t * direction
                Js_try, Rs_try, loss_try = self._evaluate(X, W_try, A, threshold, nt, Y)
                if loss_try < loss or (not self.line_search and np.isfinite(loss_try)):
                    accepted = True
                    break
                if not self.line_search:
                    break
                t *= 0.5
            if not accepted:
                break
            predicted_t = t * slope - 0.5 * t * t * curvature
            if damping is None and solver != "gd" and predicted_t > 0:
                rho = (loss - loss_try) / predicted_t
                if rho > DAMPING_SHRINK and t == 1.0:
                    lam = max(lam / 3.0, np.finfo(float).tiny)
                elif rho < DAMPING_GROW:
                    lam = lam * 2.0
            decrease = (loss - loss_try) / loss
            W, Js, Rs, loss = W_try, Js_try, Rs_try, loss_try
            J = Js[0]
            # Commit the accepted step before anything else can raise.
            self._publish(W, A, single)
            self.loss_curve_.append(loss)
            self.n_iter_ = step
            info = {
                "step": step,
                "loss": loss,
                "solver": solver,
                "cg_iterations": cg_iterations,
                "seconds": time.perf_counter() - t_start,
                "step_seconds": time.perf_counter() - t_step,
                "step_size": t,
                "damping": lam if solver != "gd" else 0.0,
                "inner_tol": eta if solver in ("sketch", "cg") else None,
                "refreshes": refreshes,
                "predicted_decrease": predicted,
            }
            if not self.history_:
                info["reason"] = reason
            self.history_.append(info)
            if self.verbose:
                print(
                    f"step {step:3d}  loss {loss:.6e}  solver {solver:6s}  cg {cg_iterations:4d}  "
                    f"t {t:.3g}  {info['seconds']:8.3f} s",
                    file=sys.stdout,
                    flush=True,
                )
            if self.callback is not None and self.callback(self, info) is True:
                break
            if 0.0 <= decrease < tol * 1e-6:  # stagnation (a rise, without line search, is not)
                break

    @staticmethod
    def _largest_eigenvalue(J, iterations=30):
        v = np.random.default_rng(0).standard_normal(J.n)
        v /= np.linalg.norm(v)
        lam = 0.0
        for _ in range(iterations):
            w = J.matvec(J.rmatvec(v))
            lam = float(np.linalg.norm(w))
            if lam == 0.0:
                return 1.0
            v = w / lam
        return lam * 1.05  # a little above the estimate: power iteration approaches from below

    # ------------------------------------------------------------------------------------------
    def predict(self, X):
        """f(W_, X): shape (n,) for a single output, (n, k) for k outputs."""
        check_is_fitted(self, "W_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        X = np.ascontiguousarray(X, dtype=np.float64)
        nt = resolve_n_threads(self.n_threads)
        if np.ndim(self.a_) == 1:
            return _forward(X, self.W_, self.a_, float(self.threshold), nt)
        return np.stack([_forward(X, self.W_, a, float(self.threshold), nt) for a in self.a_], axis=1)
