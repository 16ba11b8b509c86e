"""Prefill/decode disaggregation: prompts are computed on a prefill pool, tokens generated on a decode pool.

Splitting the phases (DistServe, Splitwise, Mooncake; vLLM's P/D connectors) keeps long prefills from
stalling other requests' decode steps, at the price of moving each request's KV cache between GPUs.

How a request flows here:

1. it is routed (``cluster.router``) to a prefill replica as a request for ONE output token, so the
   prefill replica computes the prompt's KV cache and samples token 1, then lets the request go;
2. a decode replica is picked (``cluster.disaggregation.decode_router``) and must first *have the
   blocks*: ``ceil(prompt / block_size)`` KV blocks are reserved there (FIFO per replica, as soon as they
   are free) — vLLM's decode instance likewise allocates blocks before pulling the KV;
3. the KV cache moves over the topology: ``kv_bytes_per_token × prompt tokens`` (model profile), in
   ``bytes / bottleneck bandwidth + path latency`` (:mod:`llmsim.cluster.topology`);
4. on arrival the reservation becomes the request's blocks and the decode replica generates tokens 2….

**When the client sees token 1** (``cluster.disaggregation.first_token``):

- ``after_transfer`` (default): with the KV cache, at the decode replica. vLLM's disaggregated-serving proxy
  sends the prompt to the prefill instance with ``max_tokens=1``, discards that response and streams the
  whole answer from the decode instance [R: vLLM ``disagg_proxy`` examples], so TTFT = prefill (+ queueing)
  + block wait + transfer. The decode instance's re-sampling of token 1 is not charged (one decode step).
- ``prefill``: the prefill replica streams token 1 itself (DistServe's accounting): TTFT excludes the
  transfer, which then shows in the gap between tokens 1 and 2 (ITL/TPOT).

The prefill replica frees its copy of the KV cache when the prefill ends (as if staged out at once); every
transfer is in the per-transfer table (``transfers.parquet``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from llmsim.cluster.handle import ClusterReplica
from llmsim.engine.kv_cache import cdiv
from llmsim.engine.request import Request, RequestStatus

if TYPE_CHECKING:
    from llmsim.cluster.cluster import Cluster

TRANSFER_COLUMNS = ("request_id", "prefill_replica", "decode_replica", "prompt_tokens", "bytes", "ready_s",
                    "start_s", "end_s", "wait_s", "transfer_s")


@dataclass(slots=True)
class KVTransfer:
    request: Request
    src: ClusterReplica
    num_bytes: float
    ready_s: float
    dst: Optional[ClusterReplica] = None
    start_s: Optional[float] = None
    cancelled: bool = False


class Disaggregation:
    def __init__(self, cluster: "Cluster", first_token: str, kv_bytes_per_token: Optional[float] = None) -> None:
        self.cluster = cluster
        self.env = cluster.env
        self.after_transfer = first_token == "after_transfer"
        self.kv_bytes_per_token = kv_bytes_per_token
        self._output: dict[str, int] = {}  # requests in their prefill phase → their real output length
        self._prefill_first_scheduled: dict[str, Optional[float]] = {}
        self._transfers: dict[str, KVTransfer] = {}  # waiting for blocks, or in flight
        self._queues: dict[int, deque[KVTransfer]] = {}  # decode replica → transfers waiting for blocks
        self._unplaced: deque[KVTransfer] = deque()  # no decode replica accepting yet
        self.prefill_replica: dict[str, int] = {}
        self.decode_replica: dict[str, int] = {}
        self.transfer_s: dict[str, float] = {}
        self.rows: dict[str, list] = {name: [] for name in TRANSFER_COLUMNS}

    # -- hooks called by the cluster ---------------------------------------------------------------
    def attach(self, replica: ClusterReplica) -> None:
        if replica.spec.role == "prefill" and self.after_transfer:
            replica.probe.hide_first_tokens = lambda request: request.request_id in self._output
        if replica.spec.role == "decode":
            self._queues.setdefault(replica.replica_id, deque())
            unplaced, self._unplaced = self._unplaced, deque()
            for transfer in unplaced:
                self._place(transfer)

    def submit(self, request: Request) -> None:
        if request.max_output_tokens > 1:
            self._output[request.request_id] = request.max_output_tokens
            request.max_output_tokens = 1  # the prefill replica computes the prompt and samples token 1
        self.cluster.route(request, "prefill")

    def intercept(self, replica: ClusterReplica, request: Request) -> bool:
        """True when ``request`` only finished its prefill (it moves on); False when it has really ended."""
        rid = request.request_id
        if rid not in self._output:
            return False
        request.max_output_tokens = self._output.pop(rid)
        if request.status != RequestStatus.FINISHED:
            return False  # rejected by the prefill replica: that is its end
        self.prefill_replica[rid] = replica.replica_id
        self._prefill_first_scheduled[rid] = request.first_scheduled_s
        request.status = RequestStatus.WAITING
        request.finish_s = request.finish_step = None
        request.reason = ""
        request.was_preempted = False
        per_token = self.kv_bytes_per_token or replica.spec.kv_bytes_per_token
        transfer = KVTransfer(request, replica, per_token * request.num_computed_tokens, self.env.now)
        self._transfers[rid] = transfer
        self._place(transfer)
        return True

    def blocks_may_have_freed(self, replica: ClusterReplica) -> None:
        if self._queues.get(replica.replica_id):
            self._reserve(replica)

    def finalize(self, request: Request) -> None:
        """Before the final record: queueing delay is measured at the prefill replica."""
        self.forget(request, keep_prefill=True)
        first = self._prefill_first_scheduled.pop(request.request_id, None)
        if first is not None:
            request.first_scheduled_s = first

    def forget(self, request: Request, keep_prefill: bool = False) -> None:
        """Drop the request's disaggregation state (it failed, or starts again)."""
        rid = request.request_id
        if rid in self._output:
            request.max_output_tokens = self._output.pop(rid)
        if not keep_prefill:
            self._prefill_first_scheduled.pop(rid, None)

    def replica_failed(self, replica: ClusterReplica) -> list[Request]:
        """A decode replica failed: transfers waiting for its blocks go elsewhere, those in flight are lost."""
        lost = []
        queue = self._queues.pop(replica.replica_id, deque())
        for transfer in list(self._transfers.values()):
            if transfer.dst is not replica:
                continue
            replica.inbound_transfers -= 1
            if transfer.start_s is None:
                queue.remove(transfer)
                transfer.dst = None
                self._place(transfer)
            else:
                transfer.cancelled = True
                self.cluster.timers -= 1  # its process will not finish the transfer
                del self._transfers[transfer.request.request_id]
                lost.append(transfer.request)
        return lost

    def abandon_all(self) -> list[Request]:
        left = []
        for transfer in self._transfers.values():
            if transfer.start_s is not None and not transfer.cancelled:
                self.cluster.timers -= 1
            transfer.cancelled = True
            left.append(transfer.request)
        self._transfers.clear()
        self._queues.clear()
        self._unplaced.clear()
        return left

    # -- placement, block reservation, transfer ----------------------------------------------------
    def _place(self, transfer: KVTransfer) -> None:
        request = transfer.request
        dst = self.cluster.choose(request, "decode")
        if dst is None:
            self._unplaced.append(transfer)
            return
        reason = dst.engine.rejection_reason(request)
        if reason is not None:  # the decode replica can never hold it: rejected, as the engine would
            del self._transfers[request.request_id]
            request.status = RequestStatus.REJECTED
            request.reason = reason
            self.cluster.request_ended(request)
            return
        transfer.dst = dst
        dst.inbound_transfers += 1
        self._queues[dst.replica_id].append(transfer)
        self._reserve(dst)

    def _reserve(self, dst: ClusterReplica) -> None:
        queue = self._queues[dst.replica_id]
        kv = dst.engine.kv_cache
        while queue:
            transfer = queue[0]
            if not kv.take_blocks(transfer.request, cdiv(transfer.request.num_computed_tokens, kv.block_size)):
                return  # FIFO: later transfers wait behind the head
            queue.popleft()
            transfer.start_s = self.env.now
            self.cluster.timers += 1
            self.env.process(self._send(transfer))

    def _send(self, transfer: KVTransfer):
        topology = self.cluster.topology
        duration = topology.transfer_time(transfer.src.gpus, transfer.dst.gpus, transfer.num_bytes)
        yield self.env.timeout(duration)
        if transfer.cancelled:
            return
        self.cluster.timers -= 1
        self._arrive(transfer)

    def _arrive(self, transfer: KVTransfer) -> None:
        request, dst, now = transfer.request, transfer.dst, self.env.now
        rid = request.request_id
        del self._transfers[rid]
        dst.inbound_transfers -= 1
        # The reservation becomes the request's own blocks: released here and taken again at once by the
        # scheduler's admission (nothing else runs in between at this simulated instant).
        dst.engine.kv_cache.free(request)
        self.decode_replica[rid] = dst.replica_id
        self.transfer_s[rid] = now - transfer.start_s
        row = self.rows
        for name, value in (("request_id", rid), ("prefill_replica", transfer.src.replica_id),
                            ("decode_replica", dst.replica_id), ("prompt_tokens", request.prompt_tokens),
                            ("bytes", transfer.num_bytes), ("ready_s", transfer.ready_s),
                            ("start_s", transfer.start_s), ("end_s", now),
                            ("wait_s", transfer.start_s - transfer.ready_s), ("transfer_s", now - transfer.start_s)):
            row[name].append(value)
        if self.after_transfer:
            self.cluster.recorder.tokens_emitted([request], now, None)
        dst.assign(request, 0)
