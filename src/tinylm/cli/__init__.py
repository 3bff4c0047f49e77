"""The `tinylm` command: one CLI over the recipes (pretrain, finetune, evaluate, predict, demo).

Every field of a recipe's config is a flag (`--lr 1e-4`, `--epochs 3`); a flag left out keeps the preset's value.
Each sub-command lives in a module of its own here, which adds its parser (`add_parser`) and holds its handler;
`PARSER_MODULES` lists the modules and `COMMANDS` maps each sub-command's name to its handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from tinylm.cli import demo, deploy, distill, evaluate, finetune, overlap, presets, pretrain, reproduce, selection
from tinylm.data import DataError

# In the order `tinylm --help` lists the sub-commands.
PARSER_MODULES = (pretrain, finetune, distill, evaluate, overlap, demo, reproduce, selection, presets, deploy)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "pretrain": pretrain.run,
    "finetune": finetune.run,
    "distill": distill.run,
    "evaluate": evaluate.run_evaluate,
    "predict": evaluate.run_predict,
    "overlap": overlap.run,
    "demo": demo.run,
    "reproduce": reproduce.run,
    "select": selection.run_select,
    "estimate": selection.run_estimate,
    "presets": presets.run,
    "serve": deploy.run_serve,
    "export": deploy.run_export,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinylm", description="Tiny BERT language models on modest hardware.")
    parser.add_argument("--data", default=None, help="data folder (default: $TINYLM_DATA or ../shared/data)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in PARSER_MODULES:
        module.add_parser(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `predict MODEL --runtime onnx "a text"`: argparse ends the texts at the first option; take the rest too.
        if args.command == "predict" and not any(e.startswith("-") for e in extra):
            args.texts = [*args.texts, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2, never a traceback.

    Under torchrun (docs/gpu_runbook.md) every rank runs the same command and computes the same results; only
    rank 0 prints them, and each rank leaves the process group that pretrain/finetune joined."""
    if os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    try:
        return run(argv)
    except (DataError, ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        if os.environ.get("TINYLM_DEBUG"):
            raise
        print(f"tinylm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinylm: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        if _in_process_group():
            # A rank interrupted mid-run cannot leave the group cleanly (its peers may be gone or mid-collective):
            # gloo's threads then abort the process at exit. The checkpoint is on disk; leave without teardown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # only a run that trained can have joined a process group
            from tinylm.distributed import shutdown_distributed

            shutdown_distributed()


def _in_process_group() -> bool:
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


__all__ = ["COMMANDS", "PARSER_MODULES", "build_parser", "main", "run"]
