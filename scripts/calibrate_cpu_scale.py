"""Choose the CPU scale's pre-training recipe on held-out Wikipedia openings (never on task test samples).

    TINYLM_THREADS=1 python scripts/calibrate_cpu_scale.py ARM OUT

Each arm pre-trains on the smallest CPU subset with snapshots at T/2 .. T/16, each scored by
tinylm.train.mlm_quality (held-out masked-token loss/accuracy against the unigram baseline, cloze probe). The
arms and what they bought are in docs/cpu_scale.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tinylm.config import MODEL_PRESETS, PRETRAIN_PRESETS, replace
from tinylm.train.pretrain import pretrain, snapshots

BASE = replace(PRETRAIN_PRESETS["demo"], tokenizer="tinylm-wiki-4k", articles=10_000, epochs=6, snapshots=4,
               save_every=1000)
MODEL_PRESETS["demo-nodrop"] = replace(MODEL_PRESETS["demo"], hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0)
ARMS = {
    "base": BASE,
    "nodrop": replace(BASE, model="demo-nodrop"),
    "lr2e-3": replace(BASE, lr=2e-3),
    "mask30": replace(BASE, mask_prob=0.3),
    "nodrop-lr2e-3": replace(BASE, model="demo-nodrop", lr=2e-3),
    "nodrop-mask30": replace(BASE, model="demo-nodrop", mask_prob=0.3),
    "nodrop-lr3e-3": replace(BASE, model="demo-nodrop", lr=3e-3),
    "nodrop-mask40": replace(BASE, model="demo-nodrop", mask_prob=0.4),
    "nodrop-mask30-lr5e-4": replace(BASE, model="demo-nodrop", mask_prob=0.3, lr=5e-4),
    # Issue 14's micro-batch lever, judged at equal tokens: twice the batch is half the steps.
    "nodrop-mask40-b64": replace(BASE, model="demo-nodrop", mask_prob=0.4, batch_size=64),
    "nodrop-mask40-b64-lr1.4e-3": replace(BASE, model="demo-nodrop", mask_prob=0.4, batch_size=64, lr=1.4e-3),
}
# The third CPU scale (issue 25): quality per core-hour. Base = today's CPU-scale recipe (demo shape, no dropout,
# 40 % masking, 5 % warm-up then linear decay to 0, batch 32, lr 1e-3) on the smallest or largest subset; arms
# change the batch (same tokens, so a smaller batch is more optimizer steps in about the same wall time on one
# thread) together with the learning rate, and the warm-up.
CPU = replace(PRETRAIN_PRESETS["demo"], tokenizer="tinylm-wiki-4k", epochs=4, snapshots=4, save_every=1000)
for articles, tag in ((6_000, "6k"), (12_000, "12k"), (27_000, "27k")):
    for batch, lr in ((32, 1e-3), (16, 2e-3), (16, 3e-3), (16, 4e-3), (8, 2e-3), (8, 3e-3), (8, 4e-3)):
        ARMS[f"v3-{tag}-b{batch}-lr{lr:g}"] = replace(CPU, articles=articles, batch_size=batch, lr=lr)
        ARMS[f"v3-{tag}-b{batch}-lr{lr:g}-warm0.15"] = replace(CPU, articles=articles, batch_size=batch, lr=lr,
                                                               warmup_ratio=0.15)
        ARMS[f"v3-{tag}-b{batch}-lr{lr:g}-warm0.3"] = replace(CPU, articles=articles, batch_size=batch, lr=lr,
                                                              warmup_ratio=0.3)
        ARMS[f"v3-{tag}-b{batch}-lr{lr:g}-e8"] = replace(CPU, articles=articles, batch_size=batch, lr=lr, epochs=8)


def main() -> None:
    arm, out = sys.argv[1], Path(sys.argv[2])
    summary = pretrain(ARMS[arm], out)
    curve = {}
    for step, folder in snapshots(out).items():
        meta = json.loads((folder / "tinylm_meta.json").read_text())
        q = meta.get("quality") or meta["summary"]["quality"]
        curve[step] = {k: q[k] for k in ("mlm_loss", "mlm_accuracy", "unigram_loss", "unigram_accuracy")}
        curve[step]["cloze_top5"] = q["cloze"]["top5"]
    record = {"arm": arm, "config": ARMS[arm].to_dict(), "seconds": summary["seconds"], "curve": curve}
    (out / "calibration.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
