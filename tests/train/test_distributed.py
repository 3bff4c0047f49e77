"""torchrun: data-parallel training equals one process, committees split over ranks, the GPU runbook's commands.

The process tests start 2 CPU processes with `python -m torch.distributed.run --standalone` (gloo, a free port
picked by the rendezvous) running the runbook's commands through tests/tiny_entry.py, which shrinks the
`paper` scales to a few steps of dropout-free fp32 models; the same commands run in this process give the
single-process reference. Tolerance: 1e-4 absolute on every weight (measured: at most 3.2e-5; the ranks'
gradients are summed in another order, and Adam turns the rounding noise of zero-gradient parameters, such as
attention key biases, into updates of about lr x 1e-4).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tiny_entry import installed
from tinylm.cli import main
from tinylm.committee import load_committee
from tinylm.config import ModelConfig
from tinylm.distributed import World, loss_terms, member_shard, shard_batch, weighted_loss
from tinylm.model import IGNORE_INDEX, BertForClassification, BertForMLM
from tinylm.runtime import pick_device, step_seed

ENTRY = Path(__file__).resolve().parents[1] / "tiny_entry.py"
REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "gpu_runbook.md"
ATOL = 1e-4
TORCHRUN_TIMEOUT_S = 300


def torchrun(args: list[str], data_root: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N tests/tiny_entry.py ARGS`, one thread per process."""
    env = {**os.environ, "TINYLM_THREADS": "1", "OMP_NUM_THREADS": "1", "TINYLM_DATA": str(data_root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           str(ENTRY), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].detach().float() - b[k].detach().float()).abs().max()) for k in a)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ----- the pieces, in one process -----


def test_shards_cover_the_global_batch_and_weights_sum_to_the_world() -> None:
    labels = torch.full((5, 6), IGNORE_INDEX)
    labels[0, 1] = labels[2, 3] = labels[2, 4] = labels[3, 0] = 7  # 4 masked tokens, rows 1 and 4 have none
    batch = {"input_ids": torch.arange(30).view(5, 6), "attention_mask": torch.ones(5, 6, dtype=torch.long),
             "labels": labels}
    shards = [shard_batch(batch, World(r, 2)) for r in range(2)]
    assert [s["input_ids"][:, 0].tolist() for s, _ in shards] == [[0, 12, 24], [6, 18]]
    assert [w for _, w in shards] == [2 * 3 / 4, 2 * 1 / 4]  # world x (own masked tokens / all of them)
    assert sum(w for _, w in shards) == 2
    assert all(s["input_ids"].shape[1] == 6 for s, _ in shards)  # the global batch's width, not trimmed
    # A one-row batch leaves rank 1 without rows: it runs row 0 with weight 0.
    one = {k: v[:1] for k, v in batch.items()}
    local, weight = shard_batch(one, World(1, 2))
    assert weight == 0.0 and torch.equal(local["input_ids"], one["input_ids"])
    assert loss_terms(torch.tensor([3, IGNORE_INDEX, 1])) == 2


@pytest.mark.parametrize("head", ["mlm", "classification"])
def test_weighted_rank_losses_average_to_the_global_gradient(head: str) -> None:
    """What DDP computes (the mean over ranks of each rank's weighted-loss gradient) is the one-process gradient
    of the global batch: for MLM batches whose masked tokens fall unevenly (rank 1: none), and for a batch with
    fewer rows than ranks."""
    cfg = ModelConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertForMLM(cfg) if head == "mlm" else BertForClassification(cfg, 3)
    ids = torch.randint(5, 40, (5, 8))
    mask = torch.ones_like(ids)
    mask[3, 5:] = 0
    if head == "mlm":
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[0, 2], labels[2, 5], labels[4, 1], labels[4, 6] = 9, 11, 13, 17  # rows 1 and 3 (rank 1): none
    else:
        labels = torch.tensor([0, 2, 1, 1, 0])
    for rows in (5, 1):
        batch = {"input_ids": ids[:rows], "attention_mask": mask[:rows], "labels": labels[:rows]}
        model.zero_grad()
        model(**batch).loss.backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters()}
        got = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        for rank in range(2):
            local, weight = shard_batch(batch, World(rank, 2))
            model.zero_grad()
            loss = weighted_loss(model(**local), weight)
            loss.backward()
            assert torch.isfinite(loss)
            for n, p in model.named_parameters():
                got[n] += p.grad / 2  # DDP's average over ranks
        assert _max_diff(want, got) < 1e-6, (head, rows)


def test_member_blocks_cover_every_member_once() -> None:
    for members, ranks in [(32, 8), (3, 2), (5, 3), (2, 4)]:
        blocks = [member_shard(members, World(r, ranks)) for r in range(ranks)]
        assert [j for b in blocks for j in b] == list(range(members))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_local_rank_picks_the_gpu_and_rank_0_keeps_the_dropout_stream(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick_device(None) == torch.device("cuda:3") and pick_device("cuda") == torch.device("cuda:3")
    assert pick_device("cpu") == torch.device("cpu") and pick_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device(None) == torch.device("cuda")
    assert step_seed(42, 7) == step_seed(42, 7, rank=0) == (42 * 1_000_003 + 7)
    assert len({step_seed(42, 7, rank=r) for r in range(8)}) == 8


# ----- 2 processes under torchrun (gloo) -----


def test_runbook_reproduce_all_on_2_processes_equals_one_process_across_a_kill(tmp_path, data_root) -> None:
    """`reproduce all --scale paper` (shrunk), as the runbook runs it on 1 GPU and under torchrun: data-parallel
    pre-training and fine-tuning give the weights one process gives with the same global batches, also when
    the job is killed in its first pre-training run and re-run (it resumes from rank 0's checkpoint)."""
    single, dist = tmp_path / "single", tmp_path / "dist"
    with installed():
        assert main(["--data", str(data_root), "reproduce", "all", "--scale", "paper", "--out", str(single)]) == 0
    # Killed after step 5 of the first pre-training run (6 steps; rank 0 saved a checkpoint at step 4).
    killed = torchrun(["--stop-after", "5", "reproduce", "all", "--scale", "paper", "--out", str(dist)], data_root)
    assert killed.returncode != 0 and "exitcode  : 130" in killed.stderr, killed.stderr[-3000:]
    (first,) = [p for p in (dist / "runs").iterdir()]
    assert json.loads((first / "checkpoint" / "state.json").read_text())["step"] == 4
    resumed = torchrun(["reproduce", "all", "--scale", "paper", "--out", str(dist)], data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    runs = sorted(p.name for p in (single / "runs").iterdir())
    assert runs == sorted(p.name for p in (dist / "runs").iterdir()) and len(runs) == 2 + 9  # 2 sizes, 9 fine-tunes
    for name in runs:
        assert _max_diff(_weights(single / "runs" / name), _weights(dist / "runs" / name)) < ATOL, name
    # One log line per step, written by rank 0 only, with the global batch's loss (step 5 replayed on resume).
    log_one, log_two = _log(single / "runs" / first.name), _log(first)
    assert [r["step"] for r in log_two] == [1, 2, 3, 4, 5, 5, 6]
    two = {r["step"]: r["loss"] for r in log_two}
    assert all(abs(r["loss"] - two[r["step"]]) < 1e-5 for r in log_one)
    assert json.loads((first / "summary.json").read_text())["processes"] == 2
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, dist))
    assert b["machine"]["processes"] == 2 and len(a["records"]) == len(b["records"]) == 15
    for ra, rb in zip(a["records"], b["records"], strict=True):
        assert (ra["task"], ra["articles"]) == (rb["task"], rb["articles"])
        for key in ("pretrained_accuracy", "scratch_accuracy"):
            assert ra[key] == rb[key], (ra["task"], ra["articles"], key)
    for name in ("report.md", "report.html", "gap_vs_size.png", "gap_vs_overlap.png"):
        assert (dist / name).is_file(), name


def test_runbook_reproduce_committee_on_2_processes_equals_one_process(tmp_path, data_root) -> None:
    """`reproduce committee --scale paper` (shrunk to 3 members): under torchrun the members are split 1 + 2 over
    the ranks, trained with their own seeds and gathered by rank 0 into committees equal to the single-process
    ones; the deep model trains data-parallel."""
    single, dist = tmp_path / "single", tmp_path / "dist"
    with installed():
        assert main(["--data", str(data_root), "reproduce", "committee", "--scale", "paper", "--out", str(single)]) == 0
    done = torchrun(["reproduce", "committee", "--scale", "paper", "--out", str(dist)], data_root)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = sorted(p.name for p in (single / "runs").iterdir())
    assert runs == sorted(p.name for p in (dist / "runs").iterdir())
    committees = [r for r in runs if r.startswith("committee3-")]
    assert len(committees) == 4  # pre-training + 3 tasks
    for name in committees:
        assert [p.name for p in sorted((dist / "runs" / name / "shards").iterdir())] == ["members-0-1",
                                                                                         "members-1-3"]
        one, two = load_committee(single / "runs" / name / "model"), load_committee(dist / "runs" / name / "model")
        assert two.n == 3 and two.label_names == one.label_names
        assert _max_diff(one.stacked(), two.stacked()) < ATOL, name
        if (single / "runs" / name / "member_probs.npy").is_file():
            np.testing.assert_allclose(np.load(dist / "runs" / name / "member_probs.npy"),
                                       np.load(single / "runs" / name / "member_probs.npy"), atol=1e-5)
    for name in (r for r in runs if not r.startswith("committee")):  # the deep model, data-parallel
        assert _max_diff(_weights(single / "runs" / name), _weights(dist / "runs" / name)) < ATOL, name
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, dist))
    assert [r["subsets"] for r in a["records"]] == [r["subsets"] for r in b["records"]]
    assert [r["deep_accuracy"] for r in a["records"]] == [r["deep_accuracy"] for r in b["records"]]
    assert (dist / "report.md").is_file()


def test_runbook_commands_are_the_tested_ones() -> None:
    """Every command in the runbook is one of the commands the tests above run (at the `paper` scale, which
    tests/tiny_entry.py shrinks)."""
    blocks = RUNBOOK.read_text().split("```")[1::2]
    commands = [line.strip() for b in blocks for line in b.splitlines()
                if line.strip().startswith(("tinylm ", "torchrun "))]
    tested = {
        "tinylm reproduce all --scale paper --out runs/paper",
        "torchrun --standalone --nproc-per-node 8 -m tinylm.cli reproduce all --scale paper --out runs/paper",
        "tinylm reproduce committee --scale paper --out runs/paper-committee",
        "torchrun --standalone --nproc-per-node 8 -m tinylm.cli reproduce committee --scale paper "
        "--out runs/paper-committee",
    }
    assert set(commands) == tested, set(commands) ^ tested
    assert "docs/gpu_runbook.md" in (REPO / "README.md").read_text()


def test_runbook_estimate_table_is_the_scripts_output() -> None:
    """The runbook's time and memory table is what scripts/gpu_estimate.py computes from benchmarks/results."""
    spec = importlib.util.spec_from_file_location("gpu_estimate", REPO / "scripts" / "gpu_estimate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_estimate"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    text = RUNBOOK.read_text()
    table = text.split("<!-- gpu_estimate begin -->\n", 1)[1].split("\n<!-- gpu_estimate end -->", 1)[0]
    assert table == module.markdown()
    # The BERT-6 pre-training step: the count benchmarks/train_speed.py measured (1155 GFLOP at 571 masked rows).
    run = module.Run("pre-train 90k", 1, "bert-6", 1, 90_000, 50, 32)
    assert run.estimate(1, module.Measured.load())["steps"] == 2813 * 50


@pytest.mark.slow
def test_compiled_data_parallel_pretraining_equals_eager_one_process(tmp_path, data_root) -> None:
    """`tinylm pretrain --compile true` under torchrun: torch.compile of the DDP-wrapped model trains the same
    weights as the eager model in one process (about a minute of compilation per process on 2 cores)."""
    args = ["pretrain", "--preset", "cpu", "--model", "tiny-deep", "--tokenizer", "tinylm-wiki-4k", "--articles", "41",
            "--seq-len", "32", "--batch-size", "8", "--epochs", "2", "--precision", "fp32"]
    with installed():
        assert main(["--data", str(data_root), *args, "--out", str(tmp_path / "eager")]) == 0
    done = torchrun([*args, "--compile", "true", "--out", str(tmp_path / "compiled")], data_root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _max_diff(_weights(tmp_path / "eager"), _weights(tmp_path / "compiled")) < ATOL
