#!/usr/bin/env python
"""Write the hybrid-KV scenarios of ``tests/goldens/vllm_v1_hybrid/`` (seeded: rerunning gives the same files).

Each scenario mixes full-attention and sliding-window layers (``config.layer_types``, ``config.sliding_window``)
and is sized so that long prompts and decodes run well past the window while the shared block pool runs short
(recompute preemptions). ``experiments/oracle/drive_hybrid.py`` turns each into a golden of vLLM's scheduler.

    python experiments/oracle/make_hybrid_scenarios.py OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_prefix_scenarios beside this file

GPT_OSS = ["sliding_attention", "full_attention"] * 12  # gpt-oss-20b: 24 layers alternating, window 128
GEMMA3 = (["sliding_attention"] * 5 + ["full_attention"]) * 2  # Gemma 3: 5 local : 1 global
NEAR_EVEN = ["sliding_attention", "full_attention"] * 12 + ["full_attention"]  # 12 + 13: vLLM's 1.5 rule
FULL_HEAVY = ["full_attention", "full_attention", "sliding_attention"] * 4  # 8 full : 4 sliding → 2 full groups

SCENARIOS = [
    dict(name="h01_gptoss_pressure_bs16_chunk", seed=11, layer_types=GPT_OSS, window=128,
         description="gpt-oss layout (alternating sliding 128 / full), chunked prefill, decodes far past the "
                     "window, pool short enough to preempt",
         config=dict(num_gpu_blocks=260, block_size=16, max_num_seqs=24, max_num_batched_tokens=512,
                     enable_chunked_prefill=True),
         n=40, prompt=(40, 1400), output=(20, 700), gap=3.0),
    dict(name="h02_gemma3_long_prompts_bs16_chunk", seed=12, layer_types=GEMMA3, window=256,
         description="Gemma 3 layout (5 sliding 256 : 1 full, 6 groups), long prompts chunked by a small budget, "
                     "so the sliding groups' admission cap binds",
         config=dict(num_gpu_blocks=900, block_size=16, max_num_seqs=16, max_num_batched_tokens=256,
                     enable_chunked_prefill=True),
         n=30, prompt=(300, 3000), output=(10, 400), gap=6.0),
    dict(name="h03_near_even_bs32_nochunk", seed=13, layer_types=NEAR_EVEN, window=256,
         description="12 sliding + 13 full layers (vLLM pads to two groups of 13), no chunked prefill, bs 32",
         config=dict(num_gpu_blocks=150, block_size=32, max_num_seqs=32, max_num_batched_tokens=4096,
                     enable_chunked_prefill=False, max_model_len=4096),
         n=40, prompt=(20, 2000), output=(20, 900), gap=4.0),
    dict(name="h04_small_window_threshold_bs16", seed=14, layer_types=GPT_OSS, window=64,
         description="gpt-oss layout with a 64-token window, long_prefill_token_threshold 192, watermark 0.01",
         config=dict(num_gpu_blocks=200, block_size=16, max_num_seqs=32, max_num_batched_tokens=1024,
                     enable_chunked_prefill=True, long_prefill_token_threshold=192, watermark=0.01),
         n=45, prompt=(16, 1200), output=(5, 800), gap=2.0),
    dict(name="h05_gptoss_priority_pressure_bs16_chunk", seed=15, layer_types=GPT_OSS, window=128,
         description="gpt-oss layout, priority policy (random priorities 0-3) under memory pressure: victims "
                     "are chosen by priority among requests holding sliding and full blocks",
         config=dict(num_gpu_blocks=180, block_size=16, max_num_seqs=16, max_num_batched_tokens=384,
                     enable_chunked_prefill=True, policy="priority"),
         n=40, prompt=(30, 1000), output=(20, 600), gap=2.5, priorities=4),
]


# Prefix caching with sliding-window layers: the request streams of make_prefix_scenarios.py (system prompts,
# chats, resends; priorities) on hybrid layouts, the pool resized for the extra groups.
PREFIX = [
    dict(name="hp01_gptoss_prefix_priority_bs16_chunk", source="p01_mixed_priority_pressure_bs16_chunk",
         layer_types=GPT_OSS, window=128, config=dict(num_gpu_blocks=330),
         description="prefix caching on the gpt-oss layout: system prompts, chats and resends with priorities "
                     "0-3 under memory pressure, chunked prefill"),
    dict(name="hp02_gemma3_prefix_chats_bs32_nochunk", source="p02_chats_overlap_fcfs_bs32_nochunk",
         layer_types=GEMMA3, window=256, config=dict(num_gpu_blocks=230),
         description="prefix caching on the Gemma 3 layout (5 sliding groups): overlapping chat turns, FCFS, no "
                     "chunked prefill, watermark 0.02"),
    dict(name="hp03_small_window_prefix_resends_bs16_chunk", source="p04_resends_pressure_fcfs_bs16_chunk",
         layer_types=GPT_OSS, window=64, config=dict(num_gpu_blocks=240, long_prefill_token_threshold=128),
         description="prefix caching with a 64-token window: resends of whole prompts and chats, FCFS, "
                     "long_prefill_token_threshold 128, a pool of about two large requests"),
    dict(name="hp04_full_heavy_wide_window_prefix_bs16_chunk", source="p03_threshold_priority_bs16_chunk",
         layer_types=FULL_HEAVY, window=512, config=dict(num_gpu_blocks=420),
         description="prefix caching with two full-attention groups and one sliding group of window 512 (hits "
                     "shorter than the window count from block 0), priority policy, threshold 128, a queue"),
]


def make_prefix(spec: dict) -> dict:
    from make_prefix_scenarios import SCENARIOS as PREFIX_SCENARIOS
    from make_prefix_scenarios import make as make_requests

    source = make_requests(next(s for s in PREFIX_SCENARIOS if s["name"] == spec["source"]))
    config = dict(source["config"], **spec["config"], layer_types=spec["layer_types"], sliding_window=spec["window"])
    return {"name": spec["name"], "description": spec["description"], "seed": source["seed"], "config": config,
            "requests": source["requests"]}


def make(spec: dict) -> dict:
    rng = random.Random(spec["seed"])
    requests, t = [], 0.0
    for i in range(spec["n"]):
        t += rng.expovariate(1.0 / spec["gap"])
        lo, hi = spec["prompt"]
        # Log-uniform lengths: mostly short, some long (past the window and the budget).
        prompt = int(round(lo * (hi / lo) ** rng.random()))
        lo, hi = spec["output"]
        output = int(round(lo * (hi / lo) ** rng.random()))
        request = {"id": f"r{i:03d}", "arrival_step": int(t), "prompt_len": prompt, "output_len": output}
        if spec.get("priorities"):
            request["priority"] = rng.randrange(spec["priorities"])
        requests.append(request)
    config = dict(spec["config"], layer_types=spec["layer_types"], sliding_window=spec["window"])
    return {"name": spec["name"], "description": spec["description"], "seed": spec["seed"], "config": config,
            "requests": requests}


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ".")
    out.mkdir(parents=True, exist_ok=True)
    for spec in SCENARIOS:
        scenario = make(spec)
        (out / f"{spec['name']}.scenario.json").write_text(json.dumps(scenario, indent=1) + "\n")
    for spec in PREFIX:
        scenario = make_prefix(spec)
        (out / f"{spec['name']}.scenario.json").write_text(json.dumps(scenario, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
