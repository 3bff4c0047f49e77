"""Bit-reproducibility check: the demo's pre-training recipe for one epoch (375 steps; fewer with --articles),
then a hash of the weights.

Run it twice on one machine with the same TINYLM_THREADS and compare the hashes; run it with another thread
count, on another CPU or with another torch to see whether those change the weights (docs/reproducibility.md, "What is
bit-reproducible").

    TINYLM_THREADS=1 python scripts/weights_hash.py [--epochs 1] [--articles 12000] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from tinylm.config import PRETRAIN_PRESETS, replace
from tinylm.experiments.demo import DEMO_DATA
from tinylm.train.pretrain import pretrain


def weights_sha256(path: Path) -> str:
    """sha256 over the tensors' names and raw bytes, in name order (independent of the file's layout)."""
    h = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cpu_features() -> dict[str, object]:
    """The CPU's model name and whether it has bf16 instructions (Linux: /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor()}
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"model": model, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the demo's pre-training (375 steps each)")
    parser.add_argument("--articles", type=int, default=None, help="fewer articles: 32 per step (default: 12000)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    cfg = replace(PRETRAIN_PRESETS["demo"], seed=42, tokenizer="tinylm-wiki-4k", epochs=args.epochs,
                  articles=args.articles)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "pretrain"
        result = pretrain(cfg, out, root=DEMO_DATA, device="cpu")
        digest = weights_sha256(out / "model" / "model.safetensors")
    print(json.dumps({"sha256": digest, "steps": result["steps"], "final_loss": result["final_loss"],
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_features()}))


if __name__ == "__main__":
    main()
