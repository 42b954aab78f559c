"""Training to a CPU-time budget: the step count from a timing probe, a CPU clock that stops training at the budget,
and model selection on the validation NDCG@10 of the lists a model serves."""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from gentok.training import TrainConfig, fit
from recsys.data import Split
from recsys.evaluation import SelectOnValidation
from recsys.metrics import metrics_from_ranks
from recsys.train import NextItemWindows

# the recipes' training settings (batch sizes: SASRec and SETRec 32, RecGPT 64)
COMMON = dict(lr=2e-3, min_lr_ratio=0.1, weight_decay=0.01, clip_grad=1.0, checkpoint_every=0, progress=False,
              log_every=50, num_threads=1)
BATCH = {"SASRec": 32, "RecGPT": 64, "SETRec": 32}
EVAL_USERS = 671  # validation users per selection pass (all of the demo split's)
EVALS = 5  # validation passes per run (the last at the end of training)
RUN = {"eval_users": EVAL_USERS}  # what the command line changed
PROBES: dict = {}  # (kind, catalog size, max_len) -> CPU seconds per step


class BudgetReached(Exception):
    """Raised inside the loss when a run has used its training CPU time."""


class CPUClock:
    """Training CPU seconds (`time.process_time`) counted between loss calls, with validation passes paused."""

    def __init__(self, budget: float):
        self.budget, self.used, self._last = budget, 0.0, None

    def tick(self) -> None:
        now = time.process_time()
        if self._last is not None:
            self.used += now - self._last
        self._last = now
        if self.used >= self.budget:
            raise BudgetReached

    @contextlib.contextmanager
    def paused(self):
        now = time.process_time()
        if self._last is not None:
            self.used += now - self._last
        try:
            yield
        finally:
            if self._last is not None:
                self._last = time.process_time()


class SelectOnServedLists(SelectOnValidation):
    """Model selection by validation NDCG@10 of the top-10 lists `model.recommend` serves (seen items excluded):
    exact top-10 for SASRec and SETRec, catalog-constrained beam search for RecGPT, whose exact full ranking (every
    item's probability through the trie) costs ~0.1 s per user here. Test metrics stay exact full ranking."""

    which = "valid"  # "test" only for the learning curves' recorded test column (never selected on)

    def __call__(self, model, loader) -> dict:
        _, hists, targets = self.split.cases(self.which)
        hists, targets = hists[: self.max_users], targets[: self.max_users]
        was = model.training
        model.eval()
        ranks = []
        try:
            for s in range(0, len(hists), self.batch_size):
                items, _ = model.recommend(hists[s: s + self.batch_size], k=10)
                hit = items == torch.as_tensor(targets[s: s + self.batch_size])[:, None]
                ranks.append(torch.where(hit.any(1), hit.float().argmax(1) + 1, model.num_items + 1))
        finally:
            model.train(was)
        per_user = metrics_from_ranks(torch.cat(ranks).numpy(), ks=(5, 10))
        return self.remember(model, {k: float(v.mean()) for k, v in per_user.items()})


def seconds_per_step(model: nn.Module, windows: NextItemWindows, batch_size: int, steps: int = 6) -> float:
    """CPU seconds of one optimizer step (forward, backward, AdamW) of a copy of `model`, after 2 warm-up steps."""
    probe = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4, fused=True)
    g = torch.Generator().manual_seed(0)
    for i in range(steps + 2):
        if i == 2:
            start = time.process_time()
        batch = windows.windows[torch.randint(0, len(windows), (batch_size,), generator=g)]
        loss = probe(batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
    return (time.process_time() - start) / steps


def train_budget(model: nn.Module, split: Split, budget: float, kind: str, max_len: int, work: Path) -> dict:
    """Train `model` (in place) for `budget` CPU seconds; keeps the weights with the best validation NDCG@10.
    Returns what the run did: steps planned / done, CPU seconds used, whether the budget stopped it."""
    windows = NextItemWindows(split, max_len)
    bs = BATCH[kind]
    key = (kind, split.num_items, max_len)
    if key not in PROBES:  # the step cost depends on the model and the catalog size, not on the budget
        PROBES[key] = seconds_per_step(model, windows, bs)
    per_step = PROBES[key]
    steps = max(10, int(0.9 * budget / per_step))  # a margin: steps in `fit` cost a little more than in the probe
    clock = CPUClock(budget)
    selector = SelectOnServedLists(split, max_users=RUN["eval_users"], batch_size=64)
    done = {"steps": 0}

    def loss_fn(m, batch):
        clock.tick()
        done["steps"] += 1
        out = m(batch)
        return out.loss, out.metrics

    def eval_fn(m, loader):
        with clock.paused():
            return selector(m, loader)

    if work.exists():
        shutil.rmtree(work)  # fit resumes from checkpoints in its output dir: every run starts fresh
    tcfg = TrainConfig(output_dir=str(work), max_steps=steps, batch_size=bs, warmup_steps=min(30, steps // 10),
                       eval_every=max(1, steps // (EVALS - 1)), **COMMON)
    stopped = False
    try:
        fit(model, windows, tcfg, eval_data=windows, eval_fn=eval_fn, loss_fn=loss_fn)
    except BudgetReached:
        stopped = True
        selector(model, None)  # the weights reached at the budget are a candidate too
    selector.restore(model)
    model.eval()
    shutil.rmtree(work, ignore_errors=True)
    return {"budget_s": budget, "cpu_s": round(clock.used, 2), "seconds_per_step": per_step, "steps_planned": steps,
            "steps_done": done["steps"], "stopped_by_budget": stopped,
            "valid_ndcg@10_best": selector.best}


class StopCurve(Exception):
    """Raised from a curve's validation pass when validation stopped improving (`patience` passes)."""


def train_curve(model: nn.Module, split: Split, budget: float, kind: str, max_len: int, work: Path,
                points: int = 12, patience: int = 0, spent: float = 0.0, prepare=None) -> dict:
    """One long run of `model` (in place) to `budget` CPU seconds with `points` evenly spaced validation passes:
    the learning curve (training CPU seconds vs validation NDCG@10 of the served top-10 lists, all validation users;
    the test NDCG@10 of the same lists is recorded alongside, never used for a choice). The learning rate decays
    (cosine) toward the end of the whole budget, so the curve is one schedule read at several points, not separate
    runs per budget (see docs/recsys.md, "Learning curves"). `patience` > 0 stops once that many passes in a row do
    not improve validation. `spent` is CPU time already charged to the model (its SASRec), added to `total_cpu_s`.
    `prepare(model, split)`, if given, runs before each validation pass, off the clock (SETRec's CF weight, chosen on
    validation cases only).
    The model ends holding its best-on-validation weights. Returns the run's record with `curve` (a list of points)."""
    windows = NextItemWindows(split, max_len)
    bs = BATCH[kind]
    key = (kind, split.num_items, max_len)
    if key not in PROBES:
        PROBES[key] = seconds_per_step(model, windows, bs)
    steps = max(10, int(0.9 * budget / PROBES[key]))
    clock = CPUClock(budget)
    valid = SelectOnServedLists(split, max_users=RUN["eval_users"], batch_size=64)
    test = SelectOnServedLists(split, batch_size=64)
    test.which = "test"  # the same served-list metric on the test cases: recorded, never selected on
    curve, done = [], {"steps": 0}

    def loss_fn(m, batch):
        clock.tick()
        done["steps"] += 1
        out = m(batch)
        return out.loss, out.metrics

    def record(m):
        with clock.paused():
            if prepare is not None:
                prepare(m, split)
            v = valid(m, None)["ndcg@10"]
            t = test(m, None)["ndcg@10"]
        curve.append({"step": done["steps"], "cpu_s": round(clock.used, 2), "total_cpu_s": round(clock.used + spent, 2),
                      "valid_ndcg@10": round(v, 5), "test_ndcg@10": round(t, 5)})
        print(f"  [{kind}] step {done['steps']} {clock.used:.0f}+{spent:.0f} CPU s: valid {v:.4f} test {t:.4f}",
              flush=True)
        best = max(p["valid_ndcg@10"] for p in curve)
        since = len(curve) - 1 - max(i for i, p in enumerate(curve) if p["valid_ndcg@10"] == best)
        if patience and since >= patience:
            raise StopCurve
        return {"ndcg@10": v}

    if work.exists():
        shutil.rmtree(work)
    tcfg = TrainConfig(output_dir=str(work), max_steps=steps, batch_size=bs, warmup_steps=min(30, steps // 10),
                       eval_every=max(1, steps // points), **COMMON)
    stopped = "steps"
    try:
        fit(model, windows, tcfg, eval_data=windows, eval_fn=lambda m, _: record(m), loss_fn=loss_fn)
        if not curve or curve[-1]["step"] != done["steps"]:
            record(model)
    except BudgetReached:
        stopped = "budget"
        try:
            record(model)
        except StopCurve:
            pass
    except StopCurve:
        stopped = "validation stopped improving"
    valid.restore(model)
    model.eval()
    shutil.rmtree(work, ignore_errors=True)
    return {"budget_s": budget, "cpu_s": round(clock.used, 2), "seconds_per_step": PROBES[key],
            "steps_planned": steps, "steps_done": done["steps"], "stopped_by": stopped,
            "valid_ndcg@10_best": valid.best, "curve": curve}

