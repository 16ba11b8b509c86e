#!/usr/bin/env python
"""Golden traces of vLLM's real scheduler for a hybrid (full + sliding-window attention) model.

The shared oracle (``../shared/vllm_oracle/drive.py``) gives vLLM's Scheduler a single full-attention KV cache
group. This development tool reuses that driver unchanged (its scenario format, token scheme, engine loops and
golden format) and only swaps the KV cache configuration: the scenario's ``config`` gains

    "layer_types":    the model's attention type per layer, Hugging Face's names
                      ("full_attention" / "sliding_attention"), e.g. gpt-oss's alternation;
    "sliding_window": the window of the sliding layers, in tokens.

From these the tool builds one ``FullAttentionSpec`` or ``SlidingWindowSpec`` per layer (equal page sizes) and
lets vLLM's own ``get_kv_cache_groups`` split them into KV cache groups, exactly as vLLM does at start-up for a
hybrid model on a GPU (the hybrid allocator is forced on: vLLM's CPU platform would otherwise turn it off).
``num_gpu_blocks`` is the size of the one block pool all groups share (block 0 is the null block). The golden
gains ``config.kv_cache_groups``: per group its kind, window and layer count, in vLLM's group order.

Usage (in the vLLM venv, ``VLLM_TARGET_DEVICE=cpu``):

    python experiments/oracle/drive_hybrid.py SCENARIO.json GOLDEN.json [--engine sync|async]
        [--oracle-dir ../shared/vllm_oracle]

The oracle is a development tool, not a dependency of llmsim: the goldens it writes are committed under
``tests/goldens/vllm_v1_hybrid/`` (see the README there) and replayed by ``tests/engine/test_project_goldens.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ORACLE_DIR = REPO.parent / "shared" / "vllm_oracle"
HYBRID_KEYS = ("layer_types", "sliding_window")
_FULL = {"full_attention", "full", "global", "attention"}
_SLIDING = {"sliding_attention", "sliding", "sliding_window", "local"}


def load_drive(oracle_dir: Path):
    """Import the shared driver from its folder (it is not a package)."""
    path = Path(oracle_dir) / "drive.py"
    spec = importlib.util.spec_from_file_location("vllm_oracle_drive", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no drive.py in {oracle_dir}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer_specs(layer_types: list[str], window: int, block_size: int) -> dict:
    """One KV cache spec per layer, the way an attention layer reports it to vLLM (equal page sizes)."""
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    specs = {}
    for i, kind in enumerate(layer_types):
        name = f"model.layers.{i}.self_attn.attn"
        common = dict(block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32)
        if kind in _FULL:
            specs[name] = FullAttentionSpec(**common)
        elif kind in _SLIDING:
            specs[name] = SlidingWindowSpec(**common, sliding_window=window)
        else:
            raise SystemExit(f"layer {i}: unknown attention type {kind!r}")
    return specs


def hybrid_build_scheduler(drive, layer_types: list[str], window: int):
    """drive.build_scheduler with vLLM's hybrid KV cache groups instead of one full-attention group."""
    from vllm.v1.core.kv_cache_utils import get_kv_cache_groups
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.structured_output import StructuredOutputManager

    plain_build = drive.build_scheduler

    def build(cfg: dict, engine: str):
        plain, vllm_config = plain_build(cfg, engine)  # the shared driver's configs, one full-attention group
        vllm_config.scheduler_config.disable_hybrid_kv_cache_manager = False  # as on a GPU
        # vLLM's CPU platform turns async_scheduling off in the config even though drive.py runs the
        # AsyncScheduler loop; on a GPU it stays on, and then max_in_flight_tokens, which sizes the sliding
        # groups' admission cap, counts two batches. Set it as a GPU deployment would have it.
        vllm_config.scheduler_config.async_scheduling = engine == "async"
        if vllm_config.cache_config.kv_cache_layout is None:
            # The engine core resolves it from the attention backend; FlashAttention's NHD is LBNHC (equal page
            # sizes make the grouping independent of it).
            vllm_config.cache_config.kv_cache_layout = "LBNHC"
        groups = get_kv_cache_groups(vllm_config, layer_specs(layer_types, window, cfg["block_size"]))
        # As get_kv_cache_config_from_groups does: the retention interval (default 0) decides which blocks a
        # sliding group keeps cached; it only matters with prefix caching.
        kv_cache_config = KVCacheConfig(
            num_blocks=cfg["num_gpu_blocks"], kv_cache_tensors=[], kv_cache_groups=groups,
            prefix_cache_retention_interval=vllm_config.cache_config.prefix_cache_retention_interval)
        sched = type(plain)(
            vllm_config=vllm_config,
            kv_cache_config=kv_cache_config,
            structured_output_manager=StructuredOutputManager(vllm_config),
            block_size=cfg["block_size"],
            log_stats=False,
        )
        build.groups = groups
        return sched, vllm_config

    return build


def describe_groups(groups) -> list[dict]:
    from vllm.v1.kv_cache_interface import SlidingWindowSpec

    out = []
    for g in groups:
        spec = g.kv_cache_spec
        sliding = isinstance(spec, SlidingWindowSpec)
        out.append({"kind": "sliding_attention" if sliding else "full_attention",
                    "sliding_window": spec.sliding_window if sliding else None,
                    "num_layers": len(g.layer_names), "spec": type(spec).__name__})
    return out


def run(scenario: dict, engine: str, oracle_dir: Path) -> dict:
    drive = load_drive(oracle_dir)
    config = scenario["config"]
    missing = [k for k in HYBRID_KEYS if k not in config]
    if missing:
        raise SystemExit(f"scenario config lacks {missing}: this driver is for hybrid models")
    layer_types = list(config["layer_types"])
    window = int(config["sliding_window"])
    build = hybrid_build_scheduler(drive, layer_types, window)
    drive.build_scheduler = build
    golden = drive.run(scenario, engine=engine)
    golden["config"]["layer_types"] = layer_types
    golden["config"]["sliding_window"] = window
    golden["config"]["kv_cache_groups"] = describe_groups(build.groups)
    golden["generator"]["driver"] = ("experiments/oracle/drive_hybrid.py over " + golden["generator"]["driver"]
                                     + "; KV cache groups from vllm.v1.core.kv_cache_utils.get_kv_cache_groups")
    return golden


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("golden")
    ap.add_argument("--engine", choices=["sync", "async"], default="sync")
    ap.add_argument("--oracle-dir", type=Path, default=DEFAULT_ORACLE_DIR,
                    help="folder of the shared drive.py (default: %(default)s)")
    args = ap.parse_args(argv)
    scenario = json.loads(Path(args.scenario).read_text())
    t0 = time.time()
    golden = run(scenario, args.engine, args.oracle_dir)
    text = json.dumps(golden, separators=(",", ":")) + "\n"
    if args.golden.endswith(".gz"):
        import gzip

        with open(args.golden, "wb") as f:
            f.write(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    else:
        Path(args.golden).write_text(text)
    s = golden["summary"]
    groups = ", ".join(f"{g['kind']}({g['num_layers']})" for g in golden["config"]["kv_cache_groups"])
    print(f"{scenario.get('name')}: engine={args.engine} groups=[{groups}] steps={s['num_steps']} "
          f"preemptions={s['total_preemptions']} min_free={s['min_free_blocks_after_schedule']} "
          f"max_running={s['max_running']} [{time.time() - t0:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
