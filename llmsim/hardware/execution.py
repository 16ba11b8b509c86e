"""How vLLM V1 *executes* a step around the kernels: CUDA graphs, and the engine loop's CPU time.

**CUDA graphs.** Launching a kernel from Python costs the host several microseconds; a decode step of a small
batch runs hundreds of kernels that each take only a few microseconds on the GPU, so an eager forward pass is
bound by launches. vLLM V1 records the forward pass once per *capture size* as a CUDA graph and replays it
with one launch. The defaults (``vllm/config/compilation.py``, vllm-project/vllm commit 002284db,
``CompilationConfig.cudagraph_mode`` and ``max_cudagraph_capture_size`` docstrings):

* ``cudagraph_mode = FULL_AND_PIECEWISE`` ("v1 default"): a *uniform decode* batch (every request feeds one
  token) replays a FULL graph, attention included; prefill and mixed batches replay PIECEWISE graphs, in
  which everything but attention is captured and attention runs eagerly between the pieces;
* capture sizes ``[1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)`` with
  ``max_cudagraph_capture_size = min(2 · max_num_seqs, 512)``; a batch of ``n`` tokens is padded up to the
  smallest capture size ≥ n (a decode batch of 5 runs the graph of 8), and a batch over the largest size
  runs without graphs.

:class:`Execution` carries those choices to the timing model. The kernels' GPU time is the same in every
mode (the per-kernel fixed costs of the profile were fitted on kernel-only timings); what changes is the
host time to launch them: ``kernel_launch_s`` per kernel eagerly, ``graph_launch_s`` per replayed graph
(one for FULL; one per piece for PIECEWISE, with the attention kernels launched eagerly between the
pieces). The forward pass takes max(kernels' GPU time, host launch time): a small eager decode is
launch-bound, the same batch in a graph is not. Graphs run their padded batch.

**The engine loop's CPU time.** Each step the engine core schedules (``Scheduler.schedule``), prepares the
inputs (block tables, positions, slot mapping), samples and turns the sampled ids into the outputs it hands
to the API server (``update_from_output``). Its cost grows with the requests and tokens of the step
(``cpu_step_overhead_s`` + ``cpu_per_request_overhead_s`` · requests + ``cpu_per_token_s`` · tokens +
``cpu_per_sampled_token_s`` · sampled rows). With async scheduling (vLLM's default) the CPU work of step s+1
overlaps the GPU work of step s, so a step *period* is ``max(CPU, GPU)``; the synchronous loop waits for
each and pays ``CPU + GPU``. Detokenisation runs in the API server process (``llmsim.engine.server``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

# cudagraph_mode → (runtime mode of uniform-decode batches, runtime mode of mixed/prefill batches)
GRAPH_MODES: dict[str, tuple[str, str]] = {
    "full_and_piecewise": ("full", "piecewise"),
    "full_decode_only": ("full", "none"),
    "piecewise": ("piecewise", "piecewise"),
    "full": ("full", "full"),
    "none": ("none", "none"),
}


def vllm_capture_sizes(max_num_seqs: int, max_capture_size: int | None = None) -> tuple[int, ...]:
    """vLLM V1's default CUDA-graph capture sizes for ``max_num_seqs`` (see the module docstring)."""
    largest = min(2 * max_num_seqs, 512) if max_capture_size is None else max_capture_size
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, largest + 1, 16))
    return tuple(s for s in sizes if s <= largest)


@dataclass(frozen=True)
class Execution:
    """The engine-side choices that change a step's duration but never a scheduling decision."""

    cpu_overhead: bool = True  # False: no engine CPU time at all (an idealised engine)
    async_scheduling: bool = True  # step period max(CPU, GPU); False: CPU + GPU
    cuda_graphs: str = "full_and_piecewise"  # a key of GRAPH_MODES
    capture_sizes: tuple[int, ...] = vllm_capture_sizes(256)

    def __post_init__(self) -> None:
        if self.cuda_graphs not in GRAPH_MODES:
            raise ValueError(f"cuda_graphs {self.cuda_graphs!r} is unknown; valid: {', '.join(GRAPH_MODES)}")
        object.__setattr__(self, "capture_sizes", tuple(sorted(set(int(s) for s in self.capture_sizes))))

    def graph_for(self, tokens: int, uniform_decode: bool) -> tuple[str, int]:
        """(runtime mode ``full``/``piecewise``/``none``, tokens the forward pass runs) for a batch of ``tokens``.

        vLLM's dispatcher: the mode of the batch's kind, padded to the next capture size; eager beyond the
        largest one.
        """
        mode = GRAPH_MODES[self.cuda_graphs][0 if uniform_decode else 1]
        sizes = self.capture_sizes
        if mode == "none" or not sizes or tokens > sizes[-1]:
            return "none", tokens
        return mode, sizes[bisect_left(sizes, tokens)]


def launch_cost(mode: str, layers: int, kernels: int, eff) -> tuple[int, float]:
    """(launches that each leave the GPU idle for ``kernel_gap_s``, host seconds to issue them) of one forward
    pass of ``layers`` layers and ``kernels`` kernels in graph ``mode`` (``eff``: the GPU's Efficiency).

    FULL: one graph replay. PIECEWISE: one replay per piece (layers + 1) and the cache-write and attention
    kernels of each layer launched eagerly between them. Eager: every kernel.
    """
    if mode == "full":
        return 1, eff.graph_launch_s
    if mode == "piecewise":
        return 3 * layers + 1, (layers + 1) * eff.graph_launch_s + 2 * layers * eff.kernel_launch_s
    return kernels, kernels * eff.kernel_launch_s
