"""Run a recipe's `main` one or more times in this process, optionally SIGKILLing the process mid-training.

    python tests/scripts/run_recipe.py recipes/titok.py [--kill-at-micro N] ARGS [--then ARGS ...]

Several runs in one process start from whatever global RNG state the previous run left, so equal results prove
the recipe seeds before it builds its model. `--kill-at-micro N` sends SIGKILL to this process when `fit` is about
to train micro-batch N (counted from 0 over the whole run): a kill at a known point, after the checkpoints before it.
"""

import importlib
import os
import runpy
import signal
import sys

fit_module = importlib.import_module("gentok.training.fit")  # the module: `gentok.training.fit` is also the function

args = sys.argv[1:]
recipe = args.pop(0)
if args[:1] == ["--kill-at-micro"]:
    kill_at = int(args[1])
    args = args[2:]
    micro_seed = fit_module._micro_seed

    def _killing_micro_seed(seed, micro, rank):
        if micro == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return micro_seed(seed, micro, rank)

    fit_module._micro_seed = _killing_micro_seed

runs, current = [], []
for a in args:
    if a == "--then":
        runs.append(current)
        current = []
    else:
        current.append(a)
runs.append(current)
main = runpy.run_path(recipe, run_name="recipe")["main"]
for argv in runs:
    main(argv)
