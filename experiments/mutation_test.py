"""Mutation testing of the scheduling rules: break each rule in turn and check a test that names it fails.

Each :data:`MUTATIONS` entry replaces one exact piece of source with a broken version (a numbered vLLM V1
rule, or a policy's defining behaviour), runs the tests that should notice in a scratch copy of the
repository, and counts the mutant as *killed* only if a failing test's name matches ``names`` (the rule's
own test, not a bystander such as a step-count pin). The table goes to
``experiments/results/mutation_kill_rate.csv`` and stdout::

    python experiments/mutation_test.py            # every mutation (about 2 minutes on 2 cores)
    python experiments/mutation_test.py rule-6     # only ids containing "rule-6"

The working tree is never modified: mutants live in a temporary copy.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V1 = "llmsim/engine/schedulers/vllm_v1.py"
RULE_TESTS = ("tests/engine/test_vllm_v1_rules.py",)
POLICY_TESTS = ("tests/engine/test_policies.py",)
QUEUE_TESTS = ("tests/engine/test_queues.py", "tests/engine/test_policies.py")
CACHE_TESTS = ("tests/engine/test_prefix_cache.py",)
CLIENT_TESTS = ("tests/engine/test_admission_and_client.py",)


@dataclass(frozen=True)
class Mutation:
    id: str
    group: str  # "vllm-v1 rule" or "policy"
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    names: str  # regex a failing test's name must match for the mutant to count as killed


MUTATIONS = [
    Mutation("rule-1-running-first-one-budget", "vllm-v1 rule", V1,
             "self._schedule_waiting(plan, budget, threshold)",
             "self._schedule_waiting(plan, cfg.max_num_batched_tokens, threshold)",
             RULE_TESTS, r"rule_1|running_requests_come_first|token_budget"),
    Mutation("rule-2-threshold-waived-for-lone-request", "vllm-v1 rule", V1,
             "if len(self.running) + len(self.waiting) == 1:", "if False:",
             RULE_TESTS, r"long_prefill_threshold"),
    Mutation("rule-3-fcfs-stops-at-first-misfit", "vllm-v1 rule", V1,
             "if self.chunked_prefill_switch and not cfg.enable_chunked_prefill and num_new > budget - draft_slots:\n"
             "                break",
             "if self.chunked_prefill_switch and not cfg.enable_chunked_prefill and num_new > budget - draft_slots:\n"
             "                waiting.rotate(-1); break",
             RULE_TESTS, r"rule_3|fcfs_admission"),
    Mutation("rule-4-full-isl-check", "vllm-v1 rule", V1,
             "if self.full_prompt_check and cfg.scheduler_reserve_full_isl:", "if False:",
             RULE_TESTS, r"full_isl"),
    Mutation("rule-5-victim-most-recent", "vllm-v1 rule", "llmsim/engine/queues.py",
             "return max(candidates, key=lambda r: r.admitted_seq)",
             "return min(candidates, key=lambda r: r.admitted_seq)",
             RULE_TESTS, r"rule_5|victim_is_most_recent"),
    Mutation("rule-5-victim-prepended", "vllm-v1 rule", "llmsim/engine/scheduler.py",
             "self.waiting.appendleft(victim)", "self.waiting.append(victim)",
             RULE_TESTS, r"victim_is_most_recently_admitted_and_is_prepended"),
    Mutation("rule-6-no-admission-after-preemption", "vllm-v1 rule", V1,
             "if not plan.preempted and (self.joins_running_batch or not running):",
             "if self.joins_running_batch or not running:",
             RULE_TESTS, r"rule_6|no_admission_in_a_step_that_preempted"),
    Mutation("rule-8-block-zero-reserved", "vllm-v1 rule", "llmsim/engine/kv_cache.py",
             "self.num_usable_blocks = num_gpu_blocks - 1", "self.num_usable_blocks = num_gpu_blocks",
             RULE_TESTS, r"rule_8|block_zero"),
    Mutation("rule-11-max-num-seqs", "vllm-v1 rule", V1,
             "if len(self.running) >= cfg.max_num_seqs:", "if len(self.running) > cfg.max_num_seqs:",
             RULE_TESTS, r"max_num_seqs"),
    Mutation("rule-watermark-only-while-running", "vllm-v1 rule", V1,
             "watermark = kv.watermark_blocks if self.running and self.admission_watermark else 0",
             "watermark = kv.watermark_blocks if self.admission_watermark else 0",
             RULE_TESTS, r"watermark"),
    Mutation("policy-static-no-joining", "policy", "llmsim/engine/schedulers/static.py",
             "    joins_running_batch = False", "    joins_running_batch = True",
             POLICY_TESTS, r"static"),
    Mutation("policy-sglang-ratio-decay", "policy", "llmsim/engine/schedulers/sglang.py",
             "NEW_TOKEN_RATIO_DECAY_STEPS = 600", "NEW_TOKEN_RATIO_DECAY_STEPS = 60",
             POLICY_TESTS, r"sglang_new_token_ratio"),
    Mutation("policy-vllm-v0-watermark", "policy", "llmsim/engine/schedulers/vllm_v0.py",
             "0.01", "0.02", POLICY_TESTS, r"vllm_v0_keeps_its_watermark"),
    Mutation("policy-orca-reserves-whole-output", "policy", "llmsim/engine/schedulers/orca.py",
             '    name = "orca"\n',
             '    name = "orca"\n\n    def _reserve(self, request, plan, hit_blocks=0):  # mutant: reserve the prompt only\n'
             "        tokens = self._tokens_to_feed(request) - hit_blocks * self.kv_cache.block_size\n"
             "        return self._allocate(request, tokens, plan, 0, hit_blocks)\n",
             POLICY_TESTS, r"orca_reserves_the_whole_output"),
    Mutation("policy-sarathi-decodes-first", "policy", "llmsim/engine/schedulers/sarathi.py",
             "    decodes_first = True", "    decodes_first = False",
             POLICY_TESTS, r"sarathi_schedules_decodes_before_partial_prefills"),
    Mutation("policy-tgi-waiting-served-ratio", "policy", "llmsim/engine/schedulers/tgi.py",
             "return max(1, int(len(self.running) * self.config.waiting_served_ratio))", "return 1",
             POLICY_TESTS, r"tgi_waits_for_enough_queued_requests"),
    Mutation("policy-trtllm-guaranteed-no-evict-reserves-max-need", "policy", "llmsim/engine/schedulers/trtllm.py",
             '    name = "trtllm-guaranteed-no-evict"\n',
             '    name = "trtllm-guaranteed-no-evict"\n\n    def _reserve(self, request, plan, hit_blocks=0):  # mutant: current need\n'
             "        tokens = self._tokens_to_feed(request) - hit_blocks * self.kv_cache.block_size\n"
             "        return self._allocate(request, tokens, plan, 0, hit_blocks)\n",
             POLICY_TESTS, r"guaranteed_no_evict_never_preempts_and_reserves_the_full_length"),
    Mutation("policy-trtllm-max-utilization-admits-by-current-need", "policy", "llmsim/engine/schedulers/trtllm.py",
             "    full_prompt_check = False", "    full_prompt_check = True",
             POLICY_TESTS, r"max_utilization_admits_by_current_need"),
    Mutation("queue-priority-most-urgent-first", "engine", "llmsim/engine/queues.py",
             "return (request.priority, request.arrival_s, request.request_id)",
             "return (-request.priority, request.arrival_s, request.request_id)",
             QUEUE_TESTS, r"priority_queue_admits_the_most_urgent"),
    Mutation("queue-shortest-first-order", "engine", "llmsim/engine/queues.py",
             "return self.sign * (predicted - request.num_output_tokens)",
             "return -self.sign * (predicted - request.num_output_tokens)",
             QUEUE_TESTS, r"shortest_and_longest_first"),
    Mutation("queue-starvation-guard-oldest-first", "engine", "llmsim/engine/queues.py",
             "starving = [r for r in items if now_s - r.submitted_s > guard]", "starving = []",
             QUEUE_TESTS, r"starvation_guard"),
    Mutation("victim-lowest-priority", "engine", "llmsim/engine/queues.py",
             "return max(candidates, key=lambda r: (r.priority, r.arrival_s))",
             "return min(candidates, key=lambda r: (r.priority, r.arrival_s))",
             QUEUE_TESTS, r"victim_rules"),
    Mutation("victim-most-blocks", "engine", "llmsim/engine/queues.py",
             "return max(candidates, key=lambda r: (kv.num_blocks_of(r), r.admitted_seq))",
             "return min(candidates, key=lambda r: (kv.num_blocks_of(r), r.admitted_seq))",
             QUEUE_TESTS, r"victim_rules"),
    Mutation("prefix-cache-last-token-computed", "engine", "llmsim/engine/prefix_cache.py",
             "limit = min((request.num_tokens - 1) // self.block_size, len(keys))",
             "limit = min(request.num_tokens // self.block_size, len(keys))",
             CACHE_TESTS, r"last_prompt_token_is_computed"),
    Mutation("admission-queue-cap", "engine", "llmsim/engine/admission.py",
             "num_waiting >= max_waiting_requests", "num_waiting > max_waiting_requests",
             CLIENT_TESTS, r"full_waiting_queue"),
    Mutation("client-exponential-backoff", "engine", "llmsim/engine/client.py",
             "return cfg.retry_backoff_s * 2.0 ** request.retries", "return cfg.retry_backoff_s",
             CLIENT_TESTS, r"back_off_exponentially"),
    Mutation("swap-transfer-time", "engine", "llmsim/engine/replica.py",
             "duration += swapped_blocks * self.swap_s_per_block", "duration += 0.0",
             CLIENT_TESTS, r"swap_transfer_time"),
]


def run_mutation(mutation: Mutation, scratch: Path) -> tuple[bool, list[str], float]:
    """Apply one mutation in ``scratch``, run its tests, restore; returns (killed, failing tests, seconds)."""
    path = scratch / mutation.file
    original = path.read_text()
    if original.count(mutation.old) < 1:
        raise SystemExit(f"{mutation.id}: the text to mutate is not in {mutation.file} (update the script)")
    path.write_text(original.replace(mutation.old, mutation.new, 1))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
                               "-p", "no:randomly", *mutation.tests], cwd=scratch, capture_output=True, text=True,
                              env={"PYTHONPATH": str(scratch), "PATH": "/usr/bin:/bin",
                                   # no bytecode: a mutant and its restored original can share a size and an
                                   # mtime second, and Python would then import the previous mutant's .pyc
                                   "PYTHONDONTWRITEBYTECODE": "1"}, timeout=600)
    except subprocess.TimeoutExpired:
        return True, ["<timeout>"], time.perf_counter() - start  # a hang is a detected change too
    finally:
        path.write_text(original)
    failing = re.findall(r"^FAILED \S+::(\S+)", proc.stdout, flags=re.M)
    killed = any(re.search(mutation.names, name) for name in failing)
    return killed, failing, time.perf_counter() - start


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or any(a in m.id for a in argv)]
    out = ROOT / "experiments" / "results" / "mutation_kill_rate.csv"
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmsim-mutants-") as tmp:
        scratch = Path(tmp)
        for name in ("llmsim", "tests", "hardware_profiles", "pyproject.toml"):
            source = ROOT / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, scratch / name)
        for cache in list(scratch.rglob("__pycache__")):
            shutil.rmtree(cache)
        for mutation in chosen:
            killed, failing, seconds = run_mutation(mutation, scratch)
            rows.append({"mutation": mutation.id, "group": mutation.group, "killed": killed,
                         "killed_by": ";".join(f for f in failing if re.search(mutation.names, f)),
                         "other_failures": len([f for f in failing if not re.search(mutation.names, f)]),
                         "seconds": round(seconds, 1)})
            print(f"{'KILLED ' if killed else 'SURVIVED'} {mutation.id:<45} {rows[-1]['killed_by'] or '-'}")
    for group in sorted({r["group"] for r in rows}):
        mine = [r for r in rows if r["group"] == group]
        print(f"{group}: {sum(r['killed'] for r in mine)}/{len(mine)} killed "
              f"({100 * sum(r['killed'] for r in mine) / len(mine):.0f} %)")
    print(f"all: {sum(r['killed'] for r in rows)}/{len(rows)} killed")
    if not argv:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(r["killed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
