#!/usr/bin/env python
"""Run the real vLLM V1 scheduler with speculative decoding on a scenario and write a golden trace.

A development tool (it needs vLLM installed; llmsim does not). It extends the shared oracle
``drive.py`` (``--oracle-dir``, default ``../shared/vllm_oracle``), which has no speculative decoding:
it imports that module and runs its own loop, changing only three things:

- the scheduler is built with a ``SpeculativeConfig`` (``method`` and ``num_speculative_tokens`` k);
- the fabricated model output gives a request ``1 + a`` sampled tokens instead of one, where ``a``
  (accepted drafts) comes from the scenario (below);
- with the sync engine, after each update the fabricated proposer hands the scheduler new draft token ids
  (``Scheduler.update_draft_token_ids``, as ``EngineCore.post_step`` does): every request that sampled
  and did not finish gets ``min(k, max_model_len - num_tokens)`` drafts (the n-gram proposer's cap; it
  does not look at max_tokens). With the async engine vLLM's AsyncScheduler puts k placeholder drafts on
  every decoding request itself, so nothing is handed over.

Scenario: drive.py's format plus a top-level section

    "speculative": {"method": "ngram", "num_speculative_tokens": 3,
                    "acceptance_pattern": [2, 0, 3, 1]}

and an optional per-request ``"accepted": [...]`` that replaces the pattern for that request. ``method``
is a vLLM method: ``ngram`` (sync only), ``ngram_gpu`` (allowed with async scheduling), ``draft_model``
or ``eagle`` (the draft model / EAGLE head is the oracle's config-only tiny model). The n-th verification
of a request (n = 0, 1, ...: the n-th step whose output checks at least one real draft of it) accepts
``min(pattern[n % len(pattern)], drafts scheduled in that step)`` drafts. Drafts that vLLM pads a request
with when it admits it from the waiting queue for a single token (``pad_spec_decode``: token id -1) are
never accepted and do not advance n. ``prefix_group`` requests work as in drive.py: each sampled or
accepted token is the group stream's token at its position, so multi-turn requests hit their outputs.

The golden is drive.py's format; every step record gains ``spec`` ([[request, drafts scheduled]] for
requests with drafts in the step, in scheduling order), ``padded`` (requests whose drafts are padding)
and ``accepted`` ([[request, accepted drafts]] that the update in that record takes in; for async, the
update of step ``update_of_step``, which ignores requests that finished meanwhile), and the config records ``speculative``.

Usage:
    python experiments/oracle/drive_speculative.py SCENARIO.json GOLDEN.json [--engine sync|async]
        [--oracle-dir ../shared/vllm_oracle]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

DRAFT_TOKEN_ID = 8  # any id other than EOS (2); acceptance is fabricated, the id never matters
METHODS = ("ngram", "ngram_gpu", "draft_model", "eagle")


def load_drive(oracle_dir: str):
    path = os.path.join(os.path.abspath(oracle_dir), "drive.py")
    spec = importlib.util.spec_from_file_location("vllm_oracle_drive", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_scenario(scenario: dict) -> dict:
    spec = scenario.get("speculative")
    assert isinstance(spec, dict), "scenario needs a 'speculative' section"
    unknown = set(spec) - {"method", "num_speculative_tokens", "acceptance_pattern"}
    assert not unknown, f"speculative: unknown keys {sorted(unknown)}"
    assert spec.get("method") in METHODS, f"speculative.method must be one of {METHODS}"
    k = spec.get("num_speculative_tokens")
    assert isinstance(k, int) and k >= 1, "speculative.num_speculative_tokens: a positive integer"
    for owner, pattern in [("speculative", spec.get("acceptance_pattern"))] + [
            (f"request {r['id']}", r.get("accepted")) for r in scenario["requests"] if "accepted" in r]:
        assert isinstance(pattern, list) and pattern and all(
            isinstance(a, int) and 0 <= a <= k for a in pattern), (
            f"{owner}: acceptance pattern must be a non-empty list of integers in 0..{k}, got {pattern}")
    return spec


class _HiddenGroups(dict):
    """A request's prefix group, looked up as usual, but false as a whole: drive.run then leaves the
    sampled tokens alone (it would cut them to one) and the update wrapper below sets all 1 + a of them."""

    def __bool__(self) -> bool:
        return False


def run(scenario: dict, engine: str, drive) -> dict:
    from vllm.config import ParallelConfig, SpeculativeConfig, VllmConfig
    from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput

    spec = check_scenario(scenario)
    k = spec["num_speculative_tokens"]
    method = spec["method"]
    patterns = {str(r["id"]): r.get("accepted", spec["acceptance_pattern"]) for r in scenario["requests"]}
    verifications = {rid: 0 for rid in patterns}
    max_model_len = dict(drive.CONFIG_DEFAULTS, **scenario["config"])["max_model_len"]

    # 1. Build the scheduler with a SpeculativeConfig: drive.build_scheduler makes the VllmConfig through
    # its module-level name, so hand it one that adds the speculative section.
    def vllm_config_with_speculation(**kwargs):
        parallel = ParallelConfig()
        extra = {} if method.startswith("ngram") else {"model": drive.TINY_MODEL_DIR}
        speculative = SpeculativeConfig(method=method, num_speculative_tokens=k,
                                        target_model_config=kwargs["model_config"],
                                        target_parallel_config=parallel, **extra)
        return VllmConfig(speculative_config=speculative, parallel_config=parallel, **kwargs)

    drive.VllmConfig = vllm_config_with_speculation
    built = {}
    original_plan = drive.TokenPlan

    class TokenPlan(original_plan):
        def __init__(self, reqs):
            super().__init__(reqs)
            self.group_of = _HiddenGroups(self.group_of)
            built["plan"] = self

    drive.TokenPlan = TokenPlan
    original_build = drive.build_scheduler

    def build(cfg, engine_name):
        sched, vllm_config = original_build(cfg, engine_name)
        built["sched"] = sched
        built["draft_slots"] = vllm_config.speculative_config.max_num_new_slots_for_drafting
        built["prefill_lookahead"] = vllm_config.num_prefill_lookahead_tokens
        original_update = sched.update_from_output

        def update_then_draft(so, mro):
            # vLLM ignores the output of a request that finished (or was aborted) since the step was
            # scheduled (async loop): record only the acceptances it takes in.
            step = step_of_output[id(mro)]
            accepted_of_step[step] = [[rid, a] for rid, a in accepted_of_step[step]
                                      if rid in sched.requests and not sched.requests[rid].is_finished()]
            plan = built["plan"]
            for i, rid in enumerate(mro.req_ids):
                req = sched.requests.get(rid)
                if mro.sampled_token_ids[i] and req is not None and plan.group_of.get(rid) is not None:
                    # The group stream's tokens at their positions (tokens past the stream end are past
                    # max_tokens too, and vLLM trims them).
                    stream = plan.streams[plan.group_of[rid]]
                    mro.sampled_token_ids[i] = [
                        stream[p] if p < len(stream) else drive.SAMPLED_TOKEN_ID
                        for p in range(req.num_tokens, req.num_tokens + len(mro.sampled_token_ids[i]))]
            outputs = original_update(so, mro)
            if engine_name == "sync" and so.total_num_scheduled_tokens > 0:
                # EngineCore.post_step: the proposer's drafts for the requests that sampled.
                req_ids, drafts = [], []
                for i, rid in enumerate(mro.req_ids):
                    req = sched.requests.get(rid)
                    if not mro.sampled_token_ids[i] or req is None or req.is_finished():
                        continue
                    req_ids.append(rid)
                    drafts.append([DRAFT_TOKEN_ID] * max(0, min(k, max_model_len - req.num_tokens)))
                sched.update_draft_token_ids(DraftTokenIds(req_ids, drafts))
            return outputs

        sched.update_from_output = update_then_draft
        return sched, vllm_config

    drive.build_scheduler = build

    # 2. Record each step's drafts; fabricate 1 + accepted tokens per verifying request.
    spec_of_step: dict[int, list] = {}
    padded_of_step: dict[int, list] = {}
    accepted_of_step: dict[int, list] = {}
    step_of_output: dict[int, int] = {}
    original_record = drive._record_schedule

    def record(sched, so, rec, *args, **kwargs):
        original_record(sched, so, rec, *args, **kwargs)
        admitted = set(rec["new"]) | set(rec["resumed"])
        spec_of_step[rec["step"]] = [[rid, len(so.scheduled_spec_decode_tokens[rid])]
                                     for rid in so.num_scheduled_tokens if rid in so.scheduled_spec_decode_tokens]
        # vLLM pads only a request it admits from the waiting queue; a running one carries real drafts.
        padded_of_step[rec["step"]] = [rid for rid, _ in spec_of_step[rec["step"]] if rid in admitted]
        built["last_step"] = rec["step"]

    def fabricate(sched, so):
        step = built["last_step"]
        padded = set(padded_of_step[step])
        req_ids = list(so.num_scheduled_tokens)
        sampled, accepted = [], []
        for rid in req_ids:
            req = sched.requests[rid]
            if req.is_prefill_chunk:
                sampled.append([])
                continue
            drafts = len(so.scheduled_spec_decode_tokens.get(rid, ()))
            a = 0
            if drafts and rid not in padded:
                pattern = patterns[rid]
                a = min(pattern[verifications[rid] % len(pattern)], drafts)
                verifications[rid] += 1
            if drafts:
                accepted.append([rid, a])
            sampled.append([drive.SAMPLED_TOKEN_ID] * (1 + a))
        mro = ModelRunnerOutput(req_ids=req_ids, req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
                                sampled_token_ids=sampled)
        step_of_output[id(mro)] = step
        accepted_of_step[step] = accepted
        return mro

    drive._record_schedule = record
    drive.fabricate_output = fabricate
    try:
        golden = drive.run(scenario, engine=engine)
    finally:
        drive.build_scheduler = original_build
        drive._record_schedule = original_record
        drive.TokenPlan = original_plan

    for rec in golden["steps"]:
        rec["spec"] = spec_of_step.get(rec["step"], [])
        rec["padded"] = padded_of_step.get(rec["step"], [])
        updated = rec["step"] if engine == "sync" else rec.get("update_of_step")
        rec["accepted"] = accepted_of_step.get(updated, []) if updated is not None and not rec.get("idle") else []
    golden["config"]["speculative"] = dict(spec, draft_slots=built["draft_slots"],
                                           prefill_lookahead=built["prefill_lookahead"])
    golden["summary"]["total_drafts_scheduled"] = sum(n for s in spec_of_step.values() for _, n in s)
    golden["summary"]["total_drafts_accepted"] = sum(a for s in accepted_of_step.values() for _, a in s)
    golden["generator"]["driver"] = (
        "experiments/oracle/drive_speculative.py over drive.py (fabricated ModelRunnerOutput: 1 + accepted "
        "tokens per verifying request from the scenario's acceptance pattern; sync: fabricated drafts "
        "min(k, max_model_len - num_tokens) after each update)")
    return golden


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("golden")
    ap.add_argument("--engine", choices=["sync", "async"], default="sync")
    ap.add_argument("--oracle-dir", default=os.path.join(here, "..", "..", "..", "shared", "vllm_oracle"),
                    help="folder holding the shared oracle's drive.py")
    args = ap.parse_args(argv)
    drive = load_drive(args.oracle_dir)
    with open(args.scenario) as f:
        scenario = json.load(f)
    t0 = time.time()
    golden = run(scenario, args.engine, drive)
    with open(args.golden, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    s = golden["summary"]
    print(f"{scenario.get('name')}: engine={args.engine} steps={s['num_steps']} "
          f"preemptions={s['total_preemptions']} drafts={s['total_drafts_scheduled']} "
          f"accepted={s['total_drafts_accepted']} [{time.time() - t0:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
