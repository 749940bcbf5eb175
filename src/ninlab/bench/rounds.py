"""Running the benchmark's pipelines side by side, each in a fresh process, taking turns; their output discarded.

:mod:`ninlab.bench.training` defines the pipelines and runs one in the calling process; :func:`run_round` gives each
its own process (so its peak memory is its own) and the turn window by window, so that a shared machine's changing
speed hits them alike.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from ninlab.bench.clock import Turns
from ninlab.bench.training import BenchConfig, PipelineResult, recipe_cli, run_pipeline, scratch_dir
from ninlab.training.module import NiNClassifier

__all__ = ["output_discarded", "recipe_model", "run_round"]

_GO, _STOP = "go", "stop"


@contextlib.contextmanager
def output_discarded(discard: bool = True) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to the null device while inside.

    Building and training a recipe prints Lightning's banners, warnings, model summary and progress bars, which would
    bury the benchmark's own report; they are still produced (B's progress bar is part of the ``ninlab fit`` path
    being timed), just not shown. Exceptions still propagate: a pipeline's reach the parent through the pipe.
    """
    if not discard:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)


def _worker(name: str, config: BenchConfig, conn: Connection, quiet: bool) -> None:
    """A pipeline's process: runs only while it has the turn, and reports back each time it hands the turn on."""

    def wait() -> None:
        conn.send(("paused", None))
        if conn.recv() != _GO:
            raise SystemExit(0)

    try:
        if conn.recv() != _GO:
            return
        turns = Turns(epoch=config.epochs - 1, windows=config.windows, wait=wait)
        with output_discarded(quiet):
            result = run_pipeline(name, config, turns)
        conn.send(("result", asdict(result)))
    except Exception as error:  # raised again in the parent, so ninlab's own errors stay one-line user errors
        try:
            conn.send(("error", error))
        except Exception:  # an exception that does not pickle: its type and message
            conn.send(("error", f"{type(error).__name__}: {error}"))


def _expect(name: str, process: multiprocessing.process.BaseProcess, conn: Connection, kind: str) -> Any:
    """The next message from ``name``'s process, which must be ``kind``; raises if the process failed or died."""
    while not conn.poll(1.0):
        if not process.is_alive():
            raise RuntimeError(f"bench pipeline {name!r} exited with code {process.exitcode} before reporting")
    got, payload = conn.recv()
    if got == "error":
        if isinstance(payload, Exception):
            raise payload
        raise RuntimeError(f"bench pipeline {name!r} failed: {payload}")
    if got != kind:  # pragma: no cover - a protocol bug, not a user error
        raise RuntimeError(f"bench pipeline {name!r} sent {got!r}, expected {kind!r}")
    return payload


def run_round(names: list[str], config: BenchConfig, quiet: bool = True) -> dict[str, PipelineResult]:
    """Run the pipelines ``names`` side by side, each in a fresh process, one at a time.

    Each process starts (imports) at once, then waits for its turn. The turns go round in the order of ``names``:
    each pipeline's warm-up up to its timed epoch, then window 1 of each, window 2 of each, and so on; last, each
    finishes and reports. No two pipelines ever compute at the same time, and a pipeline's stamps exclude its waits.
    With ``quiet`` the pipelines' own output (Lightning's banners, warnings and progress bars) is discarded.
    """
    context = multiprocessing.get_context("spawn")
    workers = []
    try:
        for name in names:
            conn, child = context.Pipe()
            process = context.Process(target=_worker, args=(name, config, child, quiet), name=f"ninlab-bench-{name}")
            process.start()
            child.close()
            workers.append((name, process, conn))
        for _ in range(config.windows + 1):  # the warm-up, then every window
            for name, process, conn in workers:
                conn.send(_GO)
                _expect(name, process, conn, "paused")
        results = {}
        for name, process, conn in workers:
            conn.send(_GO)
            results[name] = PipelineResult(**_expect(name, process, conn, "result"))
            process.join()  # it exits by itself, so its finalizers run (tqdm's semaphore is released)
        return results
    finally:
        # After an error: every process still running is told to stop at once, and all get the same 5 s to exit (a
        # process still importing reads the message only when it is done) before they are killed.
        running = [(process, conn) for _, process, conn in workers if process.is_alive()]
        for _, conn in running:
            with contextlib.suppress(OSError):
                conn.send(_STOP)
        deadline = time.monotonic() + 5
        for process, _ in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for _, _, conn in workers:
            conn.close()


def recipe_model(config: BenchConfig, quiet: bool = True) -> NiNClassifier:
    """The recipe's classifier (untrained), as ``ninlab fit`` would build it for the recipe's data.

    With ``quiet`` what Lightning prints while building it (seed, devices, warnings) is discarded.
    """
    with scratch_dir() as workdir, output_discarded(quiet):
        return recipe_cli(config, workdir, []).model
