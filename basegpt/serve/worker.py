"""One thread per served model: its requests are queued and run one at a time.

Why a queue and not a batch: each request then runs exactly as it would alone (the same prompt,
settings and seed give the same tokens as `basegpt generate`), which batching rows of
different requests together would not guarantee bit for bit (a batch's matrix products round
differently, and sampled rows share one random generator). The model also never sees two
threads at once, so no decoding state is shared.

    worker = ModelWorker("laptop", Path("runs/laptop"), device="cpu", max_queue=64)
    future = worker.submit(lambda run: generate(run.model, run.tokenizer, "def "))
    text = future.result()

A request admitted by `submit` counts as pending from then until its job has returned; when
`max_queue` requests are pending, the next one is refused at once with a 429 instead of
waiting without bound. The run is loaded on the worker's thread by its first job (see
registry.py for why lazily), so loading never blocks the server's event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch

from basegpt.checkpoint import Run, load_run
from basegpt.serve.errors import APIError
from basegpt.serve.limits import Limits

T = TypeVar("T")


class ModelWorker:
    """The queue and thread of one served run (module docstring)."""

    def __init__(self, model_id: str, path: Path, device: str | torch.device = "cpu",
                 max_queue: int = Limits.max_queue) -> None:
        self.model_id, self.path, self.device, self.max_queue = model_id, path, device, max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serve-{model_id}")
        self._lock = threading.Lock()                   # guards pending
        self.pending = 0
        self.run: Run | None = None                     # set by the first job that loads it
        self.load_error: str | None = None              # why the last load failed, if it did

    @property
    def status(self) -> str:
        """"ready" (loaded), "failed" (the last load did) or "not loaded" (no request yet)."""
        return "ready" if self.run is not None else "failed" if self.load_error else "not loaded"

    def submit(self, job: Callable[[Run], T]) -> Future[T]:
        """Queue `job(run)` to run on this model's thread; a 429 APIError if `max_queue`
        requests are pending already. The future's exception is the job's, or an APIError
        500 when the run cannot be loaded."""
        with self._lock:
            if self.pending >= self.max_queue:
                raise APIError(429, f"model {self.model_id!r} has {self.pending} requests "
                                    f"queued, the most this server takes (--max-queue "
                                    f"{self.max_queue}); retry later", code="queue_full")
            self.pending += 1
        future = self._executor.submit(self._call, job)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self.pending -= 1

    def _call(self, job: Callable[[Run], T]) -> T:
        return job(self._loaded())

    def _loaded(self) -> Run:
        if self.run is None:
            try:
                self.run = load_run(self.path, device=self.device)
            except Exception as error:
                # Whatever a damaged run raises (a missing file, bad JSON, a truncated
                # safetensors file, a mismatched tokenizer), it is this run's fault, not
                # the server's: the request gets the cause, and the server goes on.
                self.load_error = f"{type(error).__name__}: {error}".splitlines()[0]
                raise APIError(500, f"model {self.model_id!r} could not be loaded from "
                                    f"{self.path}: {self.load_error}; fix or replace that run "
                                    "directory (the other models are still served)",
                               code="model_load_failed") from error
            self.load_error = None
        return self.run

    def close(self) -> None:
        """Drop the queued jobs; a running one finishes."""
        self._executor.shutdown(wait=False, cancel_futures=True)
