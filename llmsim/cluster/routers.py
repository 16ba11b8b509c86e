"""Routers (global schedulers): which replica gets a request. One class per policy, chosen by name."""

from __future__ import annotations

from typing import Protocol, Sequence

from llmsim.engine.request import Request
from llmsim.errors import ConfigError


class Router(Protocol):
    def choose(self, request: Request, replicas: Sequence) -> int: ...


class RoundRobinRouter:
    """Replica i, i+1, … in turn, ignoring load."""

    def __init__(self, seed: int = 0) -> None:
        self._next = 0

    def choose(self, request: Request, replicas: Sequence) -> int:
        index = self._next % len(replicas)
        self._next += 1
        return index


ROUTERS: dict[str, type] = {
    "round-robin": RoundRobinRouter,
}


def make_router(name: str, seed: int) -> Router:
    try:
        return ROUTERS[name](seed=seed)
    except KeyError:
        valid = ", ".join(sorted(ROUTERS))
        raise ConfigError(f"config field cluster.router: unknown router {name!r}; valid: {valid}") from None
