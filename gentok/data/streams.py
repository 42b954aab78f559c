"""Streaming training views of datasets too large to hold in memory (ImageFolder trees, WebDataset tar shards,
Parquet, saved `datasets`; see `gentok.data.records`), resumable at any batch.

The stream is a pure function of (seed, number of processes, number of loader workers):
- readers: each process (accelerate rank) runs `num_workers` loader workers (or reads itself with 0); reader
  r = rank * workers + worker of R = processes * workers. In epoch e the shards are permuted by (seed, e) and reader
  r reads shards r, r + R, r + 2R, ... of that order: disjoint shards, every shard read once per epoch.
- each reader passes its records through a shuffle buffer (`shuffle_buffer` records, seeded by (seed, e, r)), then
  decodes them; a record that is not a readable image is skipped and counted (`skipped`), never fatal. Epochs follow
  each other without a gap: the stream never ends, and a batch may span two epochs.
- the view of a record (`gentok.data.views.TrainViews`) is drawn from a generator seeded by (seed, e, r, its place in
  the reader's epoch), and each reader groups its views into batches; the loader hands out batches round-robin over
  workers, so the k-th batch of a process comes from its worker k mod workers.
Resuming at micro-batch m (`loader(..., start=m)`): each worker replays its record stream and decodes (to find the
unreadable records again) but draws no views for the batches it had already produced, so the batches that follow are
the uninterrupted run's. A resume must keep the process and worker counts (checkpoint metadata records them).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gentok.data.datasets import HeldOutViews
from gentok.data.photos import Photo, decode_image
from gentok.data.records import Layout, Record, Shard, read_shard
from gentok.data.views import TrainViews, eval_view

_MESSAGES = 5  # unreadable records named on stderr per reader; the rest are only counted


class SkipCounter:
    """How many unreadable records were skipped, summed over the loader's worker processes (shared memory)."""

    def __init__(self):
        self._value = multiprocessing.get_context("spawn").Value("q", 0)

    def add(self, record: Record, reason: str, shown: int) -> None:
        with self._value.get_lock():
            self._value.value += 1
        if shown < _MESSAGES:
            print(f"gentok: skipped unreadable image {record.key}: {reason}", file=sys.stderr, flush=True)

    @property
    def value(self) -> int:
        return int(self._value.value)


def _mix(*parts: int) -> int:
    x = 0
    for p in parts:
        x = (x * 1_000_003 + int(p) + 0x9E3779B97F4A7C15) % (2**63 - 1)
    return x


def shuffled(records: Iterator, buffer: int, rng: random.Random) -> Iterator:
    """`records` through a shuffle buffer of `buffer` items (1: the order unchanged)."""
    buf: list = []
    for rec in records:
        if len(buf) < buffer:
            buf.append(rec)
            continue
        j = rng.randrange(buffer)
        out, buf[j] = buf[j], rec
        yield out
    rng.shuffle(buf)
    yield from buf


class ImageStream(IterableDataset):
    """Endless training views (3, size, size) of `shards` (module docstring); with `labels` items are (view, label).

    Args:
        shards: the training shards (`gentok.data.records.find_dataset`).
        views: the training-view policy (sizes, scales, flips, colour).
        seed: the data seed.
        shuffle_buffer: records held by each reader's shuffle buffer.
        labels: yield (view, label) pairs (class-conditional models).
        num_workers: loader workers per process; None: up to 4, fewer when the CPU or the shards are few.
        classes: class names, when the dataset has them.
    """

    def __init__(self, shards: list[Shard], views: TrainViews, seed: int = 0, shuffle_buffer: int = 1000,
                 labels: bool = False, num_workers: int | None = None, classes: tuple[str, ...] = ()):
        if not shards:
            raise ValueError("no training shards")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.shards, self.views, self.seed = list(shards), views, seed
        self.shuffle_buffer, self.labels, self.num_workers, self.classes = shuffle_buffer, labels, num_workers, classes
        self.skipped = SkipCounter()
        self.size = views.size
        # set by `loader`: the batch size, this process's rank among `world`, and the first batch to produce
        self._batch: int | None = None
        self._rank, self._world, self._start = 0, 1, 0
        self._collate: Callable | None = None

    # -- the record and view streams of one reader ----------------------------------------------------------------
    def reader_shards(self, reader: int, readers: int, epoch: int) -> list[Shard]:
        """The shards `reader` of `readers` reads in `epoch`."""
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
        return [self.shards[i] for i in order[reader::readers].tolist()]

    def _items(self, reader: int, readers: int, skip: int) -> Iterator:
        """Views (or (view, label)) of reader `reader`, epoch after epoch; the first `skip` readable records are
        decoded (to find unreadable ones) but yield nothing."""
        done = 0
        for epoch in range(sys.maxsize):
            rng = random.Random(_mix(self.seed, epoch, reader, 1))
            records = (r for s in self.reader_shards(reader, readers, epoch) for r in read_shard(s))
            good = 0
            for place, rec in enumerate(shuffled(records, self.shuffle_buffer, rng)):
                shown = self.skipped.value
                if rec.error is not None:
                    self.skipped.add(rec, rec.error, shown)
                    continue
                try:
                    image = decode_image(rec.data, rec.key)
                except ValueError as e:
                    self.skipped.add(rec, str(e), shown)
                    continue
                good += 1
                if done < skip:
                    done += 1
                    continue
                g = torch.Generator().manual_seed(_mix(self.seed, epoch, reader, place, 2))
                view = self.views(image, g)
                if self.labels:
                    yield view, -1 if rec.label is None else rec.label
                else:
                    yield view
            if not good:
                raise ValueError(f"no readable image in the shards of reader {reader} of {readers} in epoch {epoch} "
                                 f"(e.g. {self.reader_shards(reader, readers, epoch)[:1]})")

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the loader asks its workers in turn starting with worker 0, and global batch k belongs to logical worker
        # k mod workers: a loader resumed at batch `start` begins with logical worker start mod workers
        worker = (worker + self._start) % workers
        reader, readers = self._rank * workers + worker, self._world * workers
        if self._batch is None:  # plain iteration: single items, no resume
            yield from self._items(reader, readers, 0)
            return
        produced = len(range(worker, self._start, workers))  # batches this worker gave before the resume point
        batch = []
        for item in self._items(reader, readers, produced * self._batch):
            batch.append(item)
            if len(batch) == self._batch:
                yield self._collate(batch) if self._collate else _stack(batch)
                batch = []

    # -- what `gentok.training.fit` calls -------------------------------------------------------------------------
    def workers_for(self, world: int) -> int:
        """Loader workers per process: the requested count, or up to 4 given the CPU cores per process; never more
        than each process has shards for."""
        if len(self.shards) < world:
            raise ValueError(f"{len(self.shards)} training shard(s) for {world} processes: every process needs its "
                             "own shard; split the data into more shards")
        wanted = self.num_workers
        if wanted is None:
            wanted = max(1, min(4, (os.cpu_count() or 1) // world))
        return max(0, min(wanted, len(self.shards) // world))

    def loader(self, batch_size: int, rank: int = 0, world: int = 1, start: int = 0,
               device: torch.device | str | None = None, collate_fn: Callable | None = None) -> "StreamLoader":
        """The batches of process `rank` of `world`, beginning with its micro-batch `start` (0: the beginning)."""
        if batch_size < 1 or not 0 <= rank < world or start < 0:
            raise ValueError(f"invalid stream position: batch {batch_size}, rank {rank} of {world}, start {start}")
        workers = self.workers_for(world)
        part = ImageStream.__new__(ImageStream)
        part.__dict__.update(self.__dict__)
        part._batch, part._rank, part._world, part._start, part._collate = batch_size, rank, world, start, collate_fn
        return StreamLoader(part, workers, device)


def _stack(items: list):
    if isinstance(items[0], tuple):
        views, labels = zip(*items)
        return torch.stack(views), torch.tensor(labels, dtype=torch.long)
    return torch.stack(items)


class StreamLoader:
    """Iterates a configured `ImageStream` through a `DataLoader` (its workers read disjoint shards), batches moved
    to `device`."""

    def __init__(self, stream: ImageStream, num_workers: int, device=None):
        self.stream, self.num_workers = stream, num_workers
        self.device = torch.device(device) if device is not None else None

    def __iter__(self) -> Iterator:
        from accelerate.utils import send_to_device

        pin = self.device is not None and self.device.type == "cuda"
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=pin,
                            multiprocessing_context="fork" if self.num_workers and os.name == "posix" else None)
        try:
            for batch in loader:
                yield send_to_device(batch, self.device, non_blocking=pin) if self.device is not None else batch
        finally:  # the training loop stopped reading: say what was skipped on the way
            if self.stream.skipped.value:
                print(f"data: {self.stream.skipped.value} unreadable record(s) skipped by process "
                      f"{self.stream._rank}", file=sys.stderr, flush=True)


# -- the held-out set -----------------------------------------------------------------------------------------------
def held_out_photos(layout: Layout, size: int, limit: int, skipped: SkipCounter | None = None) -> list[Photo]:
    """The evaluation views (`eval_view`) of the first `limit` readable images of the held-out shards, each labelled
    with its class name (or label, or shard) as its source."""
    out: list[Photo] = []
    for shard in layout.held_out:
        for rec in read_shard(shard):
            if len(out) >= limit:
                return out
            try:
                if rec.error is not None:
                    raise ValueError(rec.error)
                image = decode_image(rec.data, rec.key)
            except ValueError as e:
                if skipped is not None:
                    skipped.add(rec, str(e), skipped.value)
                continue
            if rec.label is not None:
                source = layout.classes[rec.label] if rec.label < len(layout.classes) else str(rec.label)
            else:
                source = os.path.basename(shard.path)
            out.append(Photo(rec.key, source, eval_view(image, size)))
    if not out:
        raise ValueError(f"no readable image in the held-out shards of {layout.root}")
    return out


def stream_image_data(layout: Layout, views: TrainViews, eval_length: int = 64, seed: int = 0,
                      shuffle_buffer: int = 1000, num_workers: int | None = None,
                      labels: bool = False) -> tuple[ImageStream, HeldOutViews]:
    """(training stream, held-out views) of a dataset found by `gentok.data.records.find_dataset`: the held-out set is
    the centred evaluation view of the first `eval_length` readable images of its held-out shards."""
    train = ImageStream(list(layout.train), views, seed, shuffle_buffer, labels, num_workers, layout.classes)
    photos = held_out_photos(layout, views.size, eval_length, train.skipped)
    return train, HeldOutViews(photos, views.size, len(photos), seed=seed + 1_000_003, scales=("whole",))
