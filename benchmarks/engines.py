"""Batch scoring on engines: users/s and peak driver memory of `recsys score` locally, on Ray Data (1 and 2 workers)
and on Spark (local[1], local[2]), same input, same model; each engine's start-up time is reported apart.

Input: synthetic long-form histories (5-15 interactions per user, Parquet) over a 9k-item catalog; model: a randomly
initialised SASRec (`small` preset; scoring cost does not depend on training). Every engine run must give the local
run's row and user counts. Peak driver memory is the resident memory the driver (this Python process) gains during
the run; Spark's JVM and all engine workers are separate processes and not counted.

    python -m benchmarks.engines                          # 100k users -> benchmarks/results/engines.json
    python -m benchmarks.engines --users 1000000          # when memory allows
    python -m benchmarks.engines --users 10000 --modes local,ray1,spark1 --out /tmp/engines.json   # a quick check
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import machine, parser, print_table, write_json
from benchmarks.common import PeakRSS

MODES = {"local": ("local", 1), "ray1": ("ray", 1), "ray2": ("ray", 2), "spark1": ("spark", 1),
         "spark2": ("spark", 2)}


def make_inputs(folder: Path, users: int, items: int, seed: int = 0) -> tuple[Path, Path]:
    """A saved random SASRec over `items` items and a Parquet file of histories for `users` users."""
    from recsys.data import RecData
    from recsys.models.sasrec import SASRec, SASRecConfig
    from recsys.saving import save_recommender

    torch.manual_seed(seed)
    model = folder / "model"
    data = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], [str(i) for i in range(items)],
                   [""] * items, "int")
    save_recommender(SASRec(SASRecConfig(num_items=items, dropout=0.0)).eval(), model, data)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 16, users)
    user = np.repeat(np.arange(users, dtype=np.int64), lengths)
    df = pd.DataFrame({"user_id": user, "item_id": rng.integers(0, items, len(user)),
                       "timestamp": rng.integers(0, 10**9, len(user))}).sample(frac=1.0, random_state=seed)
    path = folder / "histories.parquet"
    df.to_parquet(path, index=False)
    return model, path


def start_engine(engine: str, workers: int) -> float:
    """Start a fresh local session of `engine` with `workers` CPUs; returns the seconds it took."""
    t = time.perf_counter()
    if engine == "ray":
        from gentok.engines import ray_runner

        ray_runner.session(num_cpus=workers)
    elif engine == "spark":
        from gentok.engines import spark_runner

        spark_runner.session(f"local[{workers},4]")
    return time.perf_counter() - t


def stop_engine(engine: str) -> None:
    if engine == "ray":
        import ray

        ray.shutdown()
    elif engine == "spark":
        from pyspark.sql import SparkSession

        SparkSession.getActiveSession().stop()


def run_mode(name: str, model: Path, inp: Path, work: Path, args) -> dict:
    from recsys.engines import score_on_engine
    from recsys.scoring import score_file

    engine, workers = MODES[name]
    startup = start_engine(engine, workers)
    with PeakRSS() as mem:
        t = time.perf_counter()
        if engine == "local":
            s = score_file(model, inp, work / f"{name}.parquet", k=args.k, partitions=args.partitions,
                           batch_users=args.batch_users, progress=False)
        else:
            s = score_on_engine(model, inp, work / name, engine=engine, k=args.k, partitions=args.partitions,
                                batch_users=args.batch_users, concurrency=workers, progress=False)
        seconds = time.perf_counter() - t
    stop_engine(engine)
    return {"mode": name, "engine": engine, "workers": workers, "startup_s": round(startup, 2),
            "seconds": round(seconds, 2), "users_per_s": s["users"] / seconds, "peak_driver_mib": round(mem.mib, 1),
            "users": s["users"], "rows": s["rows"]}


def main(argv=None):
    p = parser(__doc__, out="engines.json")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=9_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--partitions", type=int, default=8, help="user buckets (the same for every mode)")
    p.add_argument("--batch-users", type=int, default=256)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown modes {unknown}; choose from {list(MODES)}")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, inp = make_inputs(tmp, args.users, args.items)
        rows = []
        for name in modes:
            rows.append(run_mode(name, model, inp, tmp, args))
            print_table(rows[-1:], list(rows[-1]), title=None)
    base = next((r for r in rows if r["mode"] == "local"), None)
    for r in rows:
        r["vs_local"] = r["users_per_s"] / base["users_per_s"] if base else None
        if base and (r["users"], r["rows"]) != (base["users"], base["rows"]):
            raise SystemExit(f"{r['mode']} scored {r['users']} users / {r['rows']} rows, local "
                             f"{base['users']} / {base['rows']}")
    columns = ["mode", "workers", "startup_s", "seconds", "users_per_s", "vs_local", "peak_driver_mib", "users", "rows"]
    print_table(rows, columns, title=f"\nbatch scoring, {args.users:,} users, {args.items:,} items, k={args.k} "
                                     f"({machine()['cpus']} CPUs)")
    path = write_json(args.out, {"users": args.users, "items": args.items, "k": args.k,
                                 "partitions": args.partitions, "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
