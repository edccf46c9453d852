"""Swapping the served model without stopping: load the new one beside the old, try it, then
replace the holder in one assignment.

Everything a request needs from the model (the Predictor, the /api/model answer) is in one
``Served`` object at ``app.state.served``. A route reads that attribute once and uses what it got
to the end, so a request that began before a swap finishes on the old model and one that
begins after it uses the new one; there is no moment when a request sees half of each. A model
that fails to load or to classify a test image is never swapped in: the old one goes on serving
and the reason goes back to whoever asked (400 from ``POST /api/admin/reload``, the log for
SIGHUP).

Per worker process: ``Reloader`` swaps the model of the process it runs in. With several
workers, ``digitlab serve`` leaves SIGHUP to uvicorn's master, which replaces the workers one by
one (each new worker loads ``--model-dir`` and is ready before an old one is stopped; one that
fails to start leaves the old ones serving); see docs/server.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anyio
import numpy as np

from ..errors import DigitlabError
from .schemas import ModelInfo

log = logging.getLogger("digitlab.server")


@dataclass(frozen=True)
class Served:
    """The model one worker serves: swapped as a whole, never changed in place."""

    predictor: Any  # digitlab.predict.Predictor
    info: ModelInfo
    directory: Path


class ReloadError(DigitlabError):
    """The new model cannot be served; the old one still is."""


def probe_digit() -> np.ndarray:
    """A 28x28 image of a plain stroke, MNIST style (bright on dark): the image every model is
    tried on before it serves. What it reads does not matter, only that it reads it."""
    img = np.zeros((28, 28), np.uint8)
    img[5:23, 12:16] = 255
    img[5:8, 9:13] = 255
    return img


def check_served(served: Served) -> None:
    """Classify the test image with the new model, raising ``ReloadError`` unless it gives one
    finite probability per class that sum to 1."""
    predictor = served.predictor
    pred = predictor.predict_one(probe_digit(), top_k=1)
    probs = np.asarray(pred.probabilities, dtype=np.float64)
    if pred.error or probs.shape != (len(predictor.classes),) or not np.isfinite(probs).all() \
            or abs(probs.sum() - 1.0) > 1e-3:
        raise ReloadError(f"{served.directory}: the model failed its test prediction "
                          f"({pred.error or pred.reason or f'probabilities {probs.round(4)}'})")


def load_checked(load: Callable[[Path], Served], directory: Path) -> Served:
    """Load a model directory and try it; a bad one is a ``ReloadError`` with the reason."""
    try:
        served = load(directory)
    except DigitlabError as exc:
        raise ReloadError(str(exc)) from None
    except OSError as exc:
        raise ReloadError(f"{directory}: {exc.strerror or exc}") from None
    check_served(served)
    return served


class Reloader:
    """Swaps the model of this worker: ``await reload()`` re-reads the directory the server
    was started with, ``await reload(path)`` loads another. One reload at a time; requests go
    on being served meanwhile (the model is loaded in a thread)."""

    def __init__(self, app, load: Callable[[Path], Served], model_dir: Path,
                 on_swap: Callable[[Served], None] | None = None):
        self.app, self.load, self.model_dir = app, load, Path(model_dir)
        self.on_swap = on_swap  # told about each new model once it serves (metrics)
        self._lock = anyio.Lock()
        self._tasks: set[asyncio.Task] = set()

    async def reload(self, directory: str | Path | None = None) -> tuple[Served, Served]:
        """Returns (old, new); raises ``ReloadError`` and keeps the old model if the new one
        cannot serve."""
        target = Path(directory).expanduser() if directory is not None else self.model_dir
        async with self._lock:
            new = await anyio.to_thread.run_sync(load_checked, self.load, target)
            old = self.app.state.served
            self.app.state.served = new  # the swap
            if self.on_swap is not None:
                self.on_swap(new)
        log.info("digitlab: now serving %s (weights %s, was %s)", target,
                 new.info.weights_sha256[:12], old.info.weights_sha256[:12] if old else None)
        return old, new

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ReloadError as exc:
            log.error("digitlab: SIGHUP: kept the current model: %s", exc)
        except Exception:  # noqa: BLE001 - a bug: logged, and the server goes on serving
            log.exception("digitlab: SIGHUP: reload failed")

    def _on_sighup(self) -> None:
        log.info("digitlab: SIGHUP: reloading %s", self.model_dir)
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def install_sighup(self) -> Callable[[], None]:
        """Make SIGHUP reload ``model_dir`` in this process (call from its event loop, in the
        main thread); returns the function that removes the handler again."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        return lambda: loop.remove_signal_handler(signal.SIGHUP)
