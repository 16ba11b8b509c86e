"""Pipeline parallelism (micro-batches, bubbles) and expert parallelism (experts split, all-to-all)."""

from __future__ import annotations

import numpy as np
import pytest

from llmsim.errors import ProfileError
from llmsim.hardware.collectives import all_to_all_time, allreduce_time, send_recv_time
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.memory import kv_cache_capacity, weight_bytes_per_gpu
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import build_timing_model


def timing(model="Llama-2-7B", gpu="A100-80GB", **kw):
    hw = HardwareConfig(gpu=gpu, model=model, **kw)
    return build_timing_model(hw, load_gpu(gpu), load_model(model))


def test_one_request_through_two_stages_leaves_half_the_pipeline_idle():
    timed = timing(pp=2).pipeline_times([1], [500], 1)
    assert timed.num_microbatches == 1
    assert timed.bubble_fraction == pytest.approx(0.5, abs=0.02)
    # one micro-batch: the replica waits its whole trip (async scheduling hides the CPU time under it)
    assert timed.occupancy_s == pytest.approx(timed.latency_s)


def test_enough_micro_batches_fill_the_pipeline():
    timed = timing(pp=4).pipeline_times([1] * 64, [500] * 64, 64)
    assert timed.num_microbatches == 4 and timed.bubble_fraction < 0.1


def test_two_stages_double_prefill_throughput_only_with_two_micro_batches():
    one = timing(pp=1).step_time([2048, 2048], [0, 0], 2)
    two = timing(pp=2)
    assert 0.45 * one < two.step_time([2048, 2048], [0, 0], 2) < 0.6 * one
    alone = two.pipeline_times([2048], [0], 1)  # a lone prefill: no overlap, latency ≈ pp=1 plus a send
    assert alone.occupancy_s == pytest.approx(timing(pp=1).step_time([2048], [0], 1), rel=0.02)


def test_pp1_step_is_its_own_latency_without_bubble():
    tm = timing()
    timed = tm.pipeline_times([7, 1, 1], [0, 30, 40], 3)
    assert timed.bubble_fraction == 0.0
    assert timed.occupancy_s == pytest.approx(tm.step_time([7, 1, 1], [0, 30, 40], 3), rel=1e-12)


@pytest.mark.parametrize("model, tp, pp", [("Llama-2-7B", 1, 4), ("Llama-3-70B", 8, 2), ("DeepSeek-V2-Lite", 1, 3)])
def test_pipeline_decode_fast_path_equals_the_step_loop(model, tp, pp):
    tm = timing(model, "H100", tp=tp, pp=pp)
    contexts = np.array([5, 100, 1000, 3, 4096, 17, 250])
    fast = tm.decode_step_times(contexts, 40)
    slow = [tm.step_time([1] * len(contexts), list(contexts + j), len(contexts)) for j in range(40)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0)


def test_stage_boundary_across_nodes_pays_the_network():
    gpu = load_gpu("A100-80GB")
    assert send_recv_time(gpu, 8e6, same_node=False) > 3 * send_recv_time(gpu, 8e6, same_node=True)
    inside, across = timing("Llama-2-70B", tp=4, pp=2), timing("Llama-2-70B", tp=8, pp=2)  # tp 8: stage 1 on node 2
    assert across._stages[0][2] and not inside._stages[0][2]


def test_all_reduce_across_nodes_is_hierarchical_and_slower():
    gpu = load_gpu("A100-80GB")
    assert allreduce_time(gpu, 16e6, 16) > allreduce_time(gpu, 16e6, 8) > allreduce_time(gpu, 16e6, 2) > 0
    assert allreduce_time(gpu, 16e6, 1) == 0.0


def test_expert_parallel_splits_experts_not_dense_weights():
    model = load_model("Mixtral-8x7B")
    tp2 = weight_bytes_per_gpu(model, HardwareConfig(model="Mixtral-8x7B", tp=2))
    ep2 = weight_bytes_per_gpu(model, HardwareConfig(model="Mixtral-8x7B", tp=2, ep=2))
    assert ep2 == pytest.approx(tp2) == pytest.approx(model.weight_bytes() / 2)  # same GPUs, same bytes
    one = weight_bytes_per_gpu(model, HardwareConfig(model="Mixtral-8x7B"))
    assert one == pytest.approx(model.weight_bytes())
    cap = kv_cache_capacity(model, load_gpu("H100"), HardwareConfig(model="Mixtral-8x7B", tp=2, ep=2,
                                                                    activation_reserve_gib=5.4), 16, 0.9)
    assert cap.num_gpu_blocks == 22903  # REFERENCE.md table, as with plain TP 2


def test_expert_parallel_trades_all_reduce_for_all_to_all():
    tp, ep = timing("Mixtral-8x7B", "H100", tp=4), timing("Mixtral-8x7B", "H100", tp=4, ep=4)
    for batch in ([1] * 8, [512] * 4):
        a, b = tp.step_time(batch, [100] * len(batch), len(batch)), ep.step_time(batch, [100] * len(batch), len(batch))
        assert 0.7 * a < b < 1.5 * a
    gpu = load_gpu("H100")
    assert all_to_all_time(gpu, 1e6, 8) > all_to_all_time(gpu, 1e6, 2) > all_to_all_time(gpu, 1e6, 1) == 0.0


@pytest.mark.parametrize("model, tp, ep", [("Llama-2-7B", 2, 2), ("Mixtral-8x7B", 2, 4), ("Mixtral-8x7B", 4, 3)])
def test_bad_expert_parallel_degree_names_the_field(model, tp, ep):
    with pytest.raises(ProfileError, match="hardware.ep"):
        timing(model, "H100", tp=tp, ep=ep)
