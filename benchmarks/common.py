"""What every benchmark shares: its command line, timing, a description of this machine, its matmul throughput,
atomic JSON / PNG output under benchmarks/results/ and plain-text tables.

Benchmarks run from the repository root as modules, `python -m benchmarks.<name> [--help]`: benchmarks/ is a package,
so `recsys`, `gentok` and `benchmarks.common` resolve the same way for all of them and no file edits `sys.path`.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


# -- command line ----------------------------------------------------------------------------------------------------
def parser(doc: str, out: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose `--help` shows the benchmark's module docstring (first paragraph as the description,
    the rest, usage lines included, as the epilog). With `out` it has `--out`, defaulting to benchmarks/results/<out>."""
    head, _, rest = doc.strip().partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest or None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is not None:
        p.add_argument("--out", default=str(RESULTS / out), help="result JSON path (default: %(default)s)")
    return p


# -- timing -----------------------------------------------------------------------------------------------------------
def _times(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[list[float], Any]:
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def timed(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs."""
    return statistics.median(_times(fn, repeats, warmup)[0])


def best_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """(fewest seconds of `fn()` over `repeats` runs after `warmup` runs, the last run's result)."""
    times, out = _times(fn, repeats, warmup)
    return min(times), out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, run round-robin so machine load drifts hit every contender alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# -- the machine ------------------------------------------------------------------------------------------------------
def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 matmul throughput of this machine (GFLOP/s) with the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    s = timed(lambda: a @ b, repeats=repeats)
    return 2 * n**3 / s / 1e9


def machine() -> dict:
    """Platform, torch version, threads, CPUs and load: written into every result file."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# -- output -----------------------------------------------------------------------------------------------------------
def write_json(path: str | Path, payload: dict) -> Path:
    """Write `payload` (plus `machine`, unless it has one) to `path` atomically; returns the path."""
    from gentok.files import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"machine": machine(), **payload})
    return path


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    from gentok.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    """Rows as left-aligned text columns; floats with 4 significant digits (thousands grouped from 1,000 up)."""
    if title:
        print(title)
    widths = {c: max([len(c)] + [len(_fmt(r.get(c))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return "" if v is None else str(v)


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled from /proc every 5 ms)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.stop = False
        self.t = threading.Thread(target=self._watch, daemon=True)
        self.t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024
        return 0

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20
