"""Observers of a run that need more than the tables (the timeline export): what they see, and how they attach."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Protocol

from llmsim.engine.request import Request


class RecorderListener(Protocol):
    """Optional observer of a run, for tools that need more than the tables (e.g. the timeline export).

    ``on_step`` sees each engine step's plan (batch composition: ``plan.scheduled`` = [(request, new
    tokens)], ``plan.context_lens``, ``plan.preempted``), its outcome and the KV blocks in use; ``on_request_ended``
    sees each request once when it ends. Listeners only read; they never change the run.
    """

    def on_step(self, replica: int, plan, outcome, used_blocks: int, free_blocks: int) -> None: ...
    def on_request_ended(self, request: Request) -> None: ...


_ACTIVE_LISTENERS: ContextVar[tuple] = ContextVar("llmsim_recorder_listeners", default=())


def active_listeners() -> tuple:
    """The listeners attached by the :func:`recorder_listeners` blocks around this call (empty outside them)."""
    return _ACTIVE_LISTENERS.get()


@contextmanager
def recorder_listeners(*listeners: RecorderListener) -> Iterator[None]:
    """Attach ``listeners`` to every :class:`Recorder` created inside this block (e.g. by ``simulate``)."""
    token = _ACTIVE_LISTENERS.set(_ACTIVE_LISTENERS.get() + listeners)
    try:
        yield
    finally:
        _ACTIVE_LISTENERS.reset(token)
