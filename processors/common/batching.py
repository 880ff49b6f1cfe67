"""A step several lanes' handlers share: each yields its piece of work, the app runs them in one call.

A lip-sync handler renders a session's next chunk; rendered one session at a time, a GPU sees one chunk per
inference call and idles. A handler that yields a ``Shared`` instead hands its work to the app, which gathers the
pieces of every other lane that is due soon (processors/common/kafka_app.py), runs them through one
``BatchRunner`` call (one inference batch), and resumes each handler with its own result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Shared:
    """A handler's piece of a shared step: ``work`` in, ``result()`` out once the app has run it.

    ``size`` is its weight against the app's batch cap (a render's frames).
    """

    work: Any
    size: int = 1
    _result: Any = None
    _error: BaseException | None = None
    _done: bool = False

    def result(self) -> Any:
        """What the runner made of ``work``; raises what it raised for this piece alone."""
        if not self._done:
            raise RuntimeError("Shared.result() before the app ran the step")
        if self._error is not None:
            raise self._error
        return self._result

    def resolve(self, result: Any) -> None:
        self._result, self._done = result, True

    def fail(self, error: BaseException) -> None:
        self._error, self._done = error, True


# Runs many pieces' work in one call; returns one result per piece, in order.
BatchRunner = Callable[[Sequence[Any]], Sequence[Any]]


def run_shared(runner: BatchRunner, pieces: Sequence[Shared]) -> None:
    """Resolve every piece through one ``runner`` call. If that call fails, each piece is run on its own, so one
    bad piece fails only its own handler, not the sessions it happened to be batched with."""
    try:
        results = runner([piece.work for piece in pieces])
        if len(results) != len(pieces):
            raise RuntimeError(f"batch runner returned {len(results)} results for {len(pieces)} pieces")
    except Exception as error:
        if len(pieces) == 1:
            pieces[0].fail(error)
            return
        log.warning("batched step failed: running its pieces one by one", extra={"pieces": len(pieces),
                                                                                 "error": str(error)})
        for piece in pieces:
            run_shared(runner, [piece])
        return
    for piece, result in zip(pieces, results, strict=True):
        piece.resolve(result)
