"""Many replicas behind a router. The cluster is the only layer that sees more than one replica."""

from __future__ import annotations

from typing import Sequence

from llmsim.cluster.routers import Router
from llmsim.engine.replica import Replica
from llmsim.engine.request import Request


class Cluster:
    def __init__(self, replicas: Sequence[Replica], router: Router) -> None:
        self.replicas = list(replicas)
        self.router = router

    def submit(self, request: Request) -> bool:
        index = self.router.choose(request, self.replicas)
        return self.replicas[index].submit(request)

    def fail_unfinished(self, reason: str) -> int:
        return sum(len(r.fail_unfinished(reason)) for r in self.replicas)
