"""The command line: ``sketchgn train`` and ``sketchgn info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Default problem of `sketchgn train`: a seeded teacher network (trains in seconds on 2 cores).
DEFAULT_SAMPLES = 4000
DEFAULT_FEATURES = 32
DEFAULT_TEACHER_WIDTH = 64
DEFAULT_WIDTH = 8192


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def _cmd_info(args) -> int:
    from . import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            if isinstance(value, list):
                value = ", ".join(value)
            print(f"{key:<{width}}  {value}")
    return 0


def synthetic_problem(n_samples, n_features, seed, teacher_width=DEFAULT_TEACHER_WIDTH):
    """Unit-norm Gaussian inputs and the outputs of a random two-layer ReLU teacher network."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((teacher_width, n_features))
    a = rng.choice([-1.0, 1.0], teacher_width)
    y = np.maximum(X @ W.T, 0.0) @ a / np.sqrt(teacher_width)
    return X, y


def _load_csv(path, target):
    import csv

    import numpy as np

    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise CliError(f"{path}: empty file (expected a header line with column names)")
    columns = [c.strip() for c in rows[0]]
    if target is None:
        raise CliError(f"{path}: --target COLUMN is required for a .csv file (columns: {', '.join(columns)})")
    if target not in columns:
        raise CliError(f"{path}: no column {target!r} (columns: {', '.join(columns)})")
    if len(rows) < 2:
        raise CliError(f"{path}: no data rows after the header")
    data = np.empty((len(rows) - 1, len(columns)))
    for i, row in enumerate(rows[1:]):
        line = i + 2
        if len(row) != len(columns):
            raise CliError(f"{path}: line {line} has {len(row)} fields, the header has {len(columns)}")
        for j, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                shown = cell.strip() or "(empty)"
                raise CliError(f"{path}: line {line}, column {columns[j]!r}: not a number: {shown!r}") from None
            if not np.isfinite(value):
                raise CliError(f"{path}: line {line}, column {columns[j]!r}: {cell.strip()} (NaN/Inf not allowed)")
            data[i, j] = value
    j = columns.index(target)
    y = data[:, j]
    X = np.delete(data, j, axis=1)
    if X.shape[1] == 0:
        raise CliError(f"{path}: no feature columns besides the target {target!r}")
    if X.shape[0] < 2:
        raise CliError(f"{path}: need at least 2 samples, got {X.shape[0]}")
    return X, y


def _load_npz(path):
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f or "y" not in f:
                raise CliError(f"{path}: expected arrays 'X' and 'y', found {sorted(f.files)}")
            X = np.asarray(f["X"])
            y = np.asarray(f["y"])
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickled" in reason:
            reason = "not a NumPy .npz archive"
        raise CliError(f"{path}: not a readable .npz file ({reason})") from None
    if X.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise CliError(f"{path}: X and y must be numeric, got dtypes {X.dtype} and {y.dtype}")
    X = X.astype(np.float64)
    y = y.astype(np.float64)
    if X.ndim != 2 or y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise CliError(f"{path}: X must be (n, d) and y (n,) or (n, k); got {X.shape} and {y.shape}")
    if X.shape[0] < 2:
        raise CliError(f"{path}: need at least 2 samples, got {X.shape[0]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise CliError(f"{path}: X and y must not contain NaN or Inf")
    return X, y


def _load_data(args):
    if args.data is None:
        X, y = synthetic_problem(args.n_samples, args.n_features, args.seed)
        return X, y, f"synthetic teacher network (n={args.n_samples}, d={args.n_features}, seed={args.seed})"
    path = args.data
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    lower = path.lower()
    if lower.endswith(".csv"):
        X, y = _load_csv(path, args.target)
    elif lower.endswith(".npz"):
        X, y = _load_npz(path)
    else:
        raise CliError(f"{path}: unsupported file type (expected .csv or .npz)")
    return X, y, path


def _cmd_train(args) -> int:
    import numpy as np

    from ._estimator import GaussNewtonRegressor

    if args.plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install matplotlib (or sketchgn[plot])") from None

    X, y, source = _load_data(args)
    rng = np.random.default_rng(args.seed)
    n = X.shape[0]
    order = rng.permutation(n)
    n_test = max(1, int(round(args.test_fraction * n))) if n >= 5 else 0
    test, train = order[:n_test], order[n_test:]
    est = GaussNewtonRegressor(
        width=args.width, solver=args.solver, max_iter=args.max_iter, tol=args.tol, threshold=args.threshold,
        random_state=args.seed, n_threads=args.n_threads, verbose=0 if args.json else 1,
    )
    if not args.json:
        print(f"data: {source}; {len(train)} training and {n_test} held-out samples, {X.shape[1]} features")
        print(f"model: width {args.width}, solver {args.solver}")
    t0 = time.perf_counter()
    try:
        est.fit(X[train], y[train])
    except KeyboardInterrupt:
        print(f"interrupted after {est.n_iter_} steps", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    loss0 = est.loss_curve_[0] if est.loss_curve_ else float("nan")
    result = {
        "data": source,
        "n_train": int(len(train)),
        "n_test": int(n_test),
        "n_features": int(X.shape[1]),
        "width": args.width,
        "solver": est.solver_,
        "reason": est.history_[0].get("reason") if est.history_ else None,
        "steps": est.n_iter_,
        "initial_loss": loss0,
        "final_loss": est.loss_curve_[-1] if est.loss_curve_ else float("nan"),
        "relative_loss": (est.loss_curve_[-1] / loss0) if est.loss_curve_ and loss0 > 0 else 0.0,
        "train_r2": float(est.score(X[train], y[train])),
        "test_r2": float(est.score(X[test], y[test])) if n_test >= 2 else None,
        "seconds": seconds,
        "history": [
            {
                k: v
                for k, v in h.items()
                if k in ("step", "loss", "solver", "cg_iterations", "seconds", "damping")
            }
            for h in est.history_
        ],
    }
    if args.plot is not None:
        _plot(est, args.plot, source)
        result["plot"] = args.plot
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        test_r2 = "n/a" if result["test_r2"] is None else f"{result['test_r2']:.6f}"
        print(
            f"done: loss {result['final_loss']:.3e} ({result['relative_loss']:.2e} of initial) in "
            f"{result['steps']} steps, {seconds:.2f} s, solver {result['solver']}; R^2 train "
            f"{result['train_r2']:.6f}, held-out {test_r2}"
        )
        if args.plot is not None:
            print(f"plot: {args.plot}")
    return 0


def _plot(est, path, title):
    import matplotlib.pyplot as plt

    times = [0.0] + [h["seconds"] for h in est.history_]
    losses = est.loss_curve_[: len(times)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(times[: len(losses)], losses, marker="o")
    ax.set_xlabel("seconds")
    ax.set_ylabel("training loss 1/2 ||f - y||^2")
    ax.set_title(f"sketchgn ({est.solver_}): {title}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise CliError(f"{path}: cannot write the plot ({exc})") from None
    finally:
        plt.close(fig)


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sketchgn",
        description="Sketch-preconditioned Gauss-Newton training of wide two-layer ReLU networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser("train", help="train on a built-in problem or on --data FILE")
    train.add_argument("--data", metavar="FILE", help=".csv with a header (needs --target) or .npz with X and y")
    train.add_argument("--target", metavar="COLUMN", help="target column of a .csv file")
    train.add_argument("--width", type=_positive_int, default=DEFAULT_WIDTH, help="hidden neurons m")
    train.add_argument("--solver", choices=["auto", "sketch", "exact", "cg", "gd"], default="auto")
    train.add_argument("--max-iter", type=_positive_int, default=50, help="Gauss-Newton steps at most")
    train.add_argument("--tol", type=float, default=1e-6, help="stop at this fraction of the initial loss")
    train.add_argument("--threshold", type=float, default=0.0, help="ReLU shift b")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-threads", type=int, default=None)
    train.add_argument("--n-samples", type=_positive_int, default=DEFAULT_SAMPLES,
                       help="size of the built-in problem")
    train.add_argument("--n-features", type=_positive_int, default=DEFAULT_FEATURES,
                       help="input dimension of the built-in problem")
    train.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the samples")
    train.add_argument("--plot", metavar="FILE.png", help="draw the loss against time (needs matplotlib)")
    train.add_argument("--json", action="store_true", help="print a machine-readable result only")
    train.set_defaults(func=_cmd_train)
    info = sub.add_parser("info", help="version, SIMD path, OpenMP threads, compiler, Eigen version")
    info.add_argument("--json", action="store_true", help="print a JSON object")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if getattr(args, "test_fraction", 0.0) is not None and not 0.0 <= getattr(args, "test_fraction", 0.0) < 1.0:
        print("sketchgn: error: --test-fraction must be in [0, 1)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (CliError, TypeError, ValueError, MemoryError) as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"sketchgn: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
