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
