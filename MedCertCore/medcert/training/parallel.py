"""Per-seed work (evaluation, calibration) in worker processes: generating, preprocessing and resampling a
phantom are single-threaded, so two one-thread workers use two cores better than one two-thread process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def map_seeds(fn: Callable[[int], T], seeds: Iterable[int], jobs: int = 1) -> Iterator[T]:
    """``fn(seed)`` for every seed, in seed order; ``jobs`` > 1 runs that many worker processes (``fn`` must then
    be picklable: a module-level function or a ``functools.partial`` of one)."""
    if jobs <= 1:
        yield from map(fn, seeds)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, list(seeds))


def worker_threads(threads: int | None, jobs: int) -> int | None:
    """Torch threads per worker: as asked, else one per worker when there are several (None: torch's default)."""
    return threads or (1 if jobs > 1 else None)


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads in this process (a worker's own setting)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
