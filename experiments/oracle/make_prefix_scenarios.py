#!/usr/bin/env python
"""Write the prefix-caching scenarios of ``tests/goldens/vllm_v1_prefix/`` (seeded: reruns give the same files).

They use the shared oracle's request fields (``prefix_group`` / ``prefix_len``, ``priority``; see
``../shared/vllm_oracle/drive.py``) and differ from the shared goldens in how they mix them: system prompts and
multi-turn chats in one scenario, resends of a whole prompt (its last block recomputed), chats whose turns arrive
while the previous turn still runs, priorities under memory pressure, a watermark, and a per-request prefill cap.
Every scenario preempts. ``drive.py`` turns each into a golden:

    python experiments/oracle/make_prefix_scenarios.py OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SCENARIOS = [
    dict(name="p01_mixed_priority_pressure_bs16_chunk", seed=21,
         description="system prompts + chats + resends, priorities 0-3, small pool (preemptions pick the worst "
                     "priority), chunked prefill",
         config=dict(num_gpu_blocks=220, block_size=16, max_num_seqs=32, max_num_batched_tokens=512,
                     enable_chunked_prefill=True, enable_prefix_caching=True, policy="priority"),
         sys_groups=[(600, 0.5), (250, 0.3)], n_sys=30, chats=4, turns=(2, 4), resends=6, priorities=4,
         user=(10, 300), output=(20, 350), gap=3.0, think=(0, 30)),
    dict(name="p02_chats_overlap_fcfs_bs32_nochunk", seed=22,
         description="multi-turn chats whose next turn often arrives before the previous one ends (its blocks are "
                     "not cached yet), FCFS, no chunked prefill, watermark 0.02",
         config=dict(num_gpu_blocks=110, block_size=32, max_num_seqs=16, max_num_batched_tokens=4096,
                     enable_chunked_prefill=False, enable_prefix_caching=True, policy="fcfs", max_model_len=4096,
                     watermark=0.02),
         sys_groups=[(300, 1.0)], n_sys=8, chats=8, turns=(2, 5), resends=3, priorities=1,
         user=(10, 200), output=(30, 400), gap=4.0, think=(-40, 20)),
    dict(name="p03_threshold_priority_bs16_chunk", seed=23,
         description="long shared prefixes, long_prefill_token_threshold 128, priority policy, max_num_seqs 8 "
                     "(a queue builds) and a pool that preempts",
         config=dict(num_gpu_blocks=300, block_size=16, max_num_seqs=8, max_num_batched_tokens=768,
                     enable_chunked_prefill=True, enable_prefix_caching=True, policy="priority",
                     long_prefill_token_threshold=128),
         sys_groups=[(1200, 0.6), (500, 0.4)], n_sys=35, chats=3, turns=(2, 3), resends=5, priorities=3,
         user=(5, 400), output=(10, 500), gap=2.0, think=(0, 15)),
    dict(name="p04_resends_pressure_fcfs_bs16_chunk", seed=24,
         description="many resends of identical prompts (whole-prompt hits capped at T-1) and chats, FCFS, "
                     "pool of about two large requests",
         config=dict(num_gpu_blocks=140, block_size=16, max_num_seqs=64, max_num_batched_tokens=1024,
                     enable_chunked_prefill=True, enable_prefix_caching=True, policy="fcfs"),
         sys_groups=[(400, 1.0)], n_sys=15, chats=4, turns=(2, 4), resends=14, priorities=1,
         user=(16, 320), output=(16, 500), gap=3.0, think=(0, 25)),
]


def _length(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(lo * (hi / lo) ** rng.random()))  # log-uniform


def make(spec: dict) -> dict:
    rng = random.Random(spec["seed"])
    reqs: list[dict] = []

    def prio() -> dict:
        return {"priority": rng.randrange(spec["priorities"])} if spec["priorities"] > 1 else {}

    # System-prompt traffic: Poisson arrivals, a group picked by popularity, a distinct user part.
    t = 0.0
    groups, weights = zip(*spec["sys_groups"])
    for i in range(spec["n_sys"]):
        t += rng.expovariate(1.0 / spec["gap"])
        g = rng.choices(range(len(groups)), weights)[0]
        user = _length(rng, *spec["user"])
        reqs.append(dict(id=f"s{i:03d}", arrival_step=int(t), prompt_len=groups[g] + user,
                         output_len=_length(rng, *spec["output"]), prefix_group=f"sys{g}",
                         prefix_len=groups[g], **prio()))
    horizon = max(t, 1.0)
    # Resends: the whole prompt of an earlier system-prompt request again (its own group, full-prompt prefix).
    for k in range(spec["resends"]):
        src = rng.choice(reqs[: spec["n_sys"]])
        prompt = src["prefix_len"] + _length(rng, *spec["user"])
        group = f"resend{k}"
        first = int(rng.uniform(0, horizon))
        for j in range(2):
            reqs.append(dict(id=f"d{k:02d}{j}", arrival_step=first + j * int(rng.uniform(0, 40)),
                             prompt_len=prompt, output_len=_length(rng, *spec["output"]), prefix_group=group,
                             prefix_len=prompt, **prio()))
    # Chats: turn k's prompt is turn k-1's prompt + output + a new user message, all in the chat's stream.
    for c in range(spec["chats"]):
        arrival = int(rng.uniform(0, horizon))
        prompt = _length(rng, *spec["user"])
        p = prio()
        for k in range(rng.randint(*spec["turns"])):
            output = _length(rng, *spec["output"])
            reqs.append(dict(id=f"c{c}t{k}", arrival_step=arrival, prompt_len=prompt, output_len=output,
                             prefix_group=f"chat{c}", prefix_len=prompt, **p))
            # Next turn: about when this one should end (one token a step), give or take the think time.
            arrival = max(arrival + 1, arrival + output + int(rng.uniform(*spec["think"])))
            prompt = prompt + output + _length(rng, *spec["user"])
    reqs.sort(key=lambda r: (r["arrival_step"], r["id"]))
    return {"name": spec["name"], "description": spec["description"], "seed": spec["seed"],
            "config": spec["config"], "requests": reqs}


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ".")
    out.mkdir(parents=True, exist_ok=True)
    for spec in SCENARIOS:
        scenario = make(spec)
        (out / f"{spec['name']}.scenario.json").write_text(json.dumps(scenario, indent=1) + "\n")
        print(spec["name"], len(scenario["requests"]), "requests, longest",
              max(r["prompt_len"] + r["output_len"] for r in scenario["requests"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
