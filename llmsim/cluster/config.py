"""The `cluster:` section: how many replicas and how requests are routed to them."""

from __future__ import annotations

from pydantic import Field

from llmsim.configbase import StrictModel


class ClusterConfig(StrictModel):
    replicas: int = Field(1, ge=1, description="number of identical replicas")
    router: str = Field("round-robin", description="global scheduler that picks a replica per request")
