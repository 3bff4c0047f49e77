"""Turn a finished pre-training run into the model folder the package ships (docs/pretrained_model.md).

    python scripts/build_shipped_model.py RUN_FOLDER --hardware "what it trained on" [--out FOLDER] [--data DIR]

RUN_FOLDER is a finished `tinylm pretrain` run (its summary.json, pretrain_config.json and model/). The model
folder is copied to FOLDER (default: the shipped tinylm-mini, src/tinylm/pretrained/tinylm-mini): fp32 weights when
model.safetensors is at most --max-fp32-mb (8 MB), else bf16. The held-out MLM loss and accuracy (a fixed, seeded
15 % of the held-out Wikipedia openings' tokens, tinylm.train.mlm_quality) and the cloze probe are the run's own
(summary.json) for fp32 weights, and measured again on the shipped bf16 weights otherwise (that needs the data
folder: --data or TINYLM_DATA). The model card, FOLDER/README.md, says what the model is, what it was trained on
and how, what it scores and what it is not for. Last, the folder is loaded with
transformers.AutoModelForMaskedLM and with tinylm, so a folder that either refuses is never left as the shipped one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tinylm.checkpoint import load_model
from tinylm.config import SHIPPED_MODELS, PretrainConfig
from tinylm.data.encoding import encode_cached
from tinylm.tokenizer import load_tokenizer
from tinylm.train.mlm_quality import EVAL_MASK_PROB, quality_or_reason
from tinylm.train.pretrain import load_summary, pretraining_texts

NAME = next(iter(SHIPPED_MODELS))
MAX_FP32_MB = 8.0
WEIGHTS = "model.safetensors"
CARD = "README.md"
# The files of a model folder the package ships (pyproject.toml's package data takes the same kinds).
KEPT = ("config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
        "tinylm_meta.json")


def copy_weights(source: Path, dest: Path, max_fp32_mb: float) -> str:
    """Copy model.safetensors as fp32 if small enough, else with every floating tensor in bf16; the dtype."""
    if source.stat().st_size <= max_fp32_mb * 2**20:
        shutil.copyfile(source, dest)
        return "float32"
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
    save_file(state, str(dest), metadata={"format": "pt"})
    return "bfloat16"


def measured_quality(folder: Path, run: Path, root: str | None) -> dict[str, Any]:
    """The held-out quality of the shipped weights (mlm_quality), against the run's training subset's unigram
    baseline: the same measure pre-training ends with."""
    cfg = PretrainConfig(**json.loads((run / "pretrain_config.json").read_text()))
    tokenizer = load_tokenizer(folder)
    train_ids = encode_cached(tokenizer, pretraining_texts(cfg, root), cfg.seq_len)
    model = load_model(folder, head="mlm").float()
    return quality_or_reason(model, tokenizer, train_ids, len(train_ids), cfg.seq_len, root=root,
                             data_seed=cfg.data_seed, source=cfg.data_source)


def build(run: str | Path, out: str | Path, *, hardware: str, root: str | None = None,
          max_fp32_mb: float = MAX_FP32_MB, name: str = NAME) -> dict[str, Any]:
    """Write the shipped folder `out` from the finished run `run`; returns what the card states."""
    run, out = Path(run), Path(out)
    if not (run / "summary.json").is_file() or not (run / "model" / "config.json").is_file():
        raise SystemExit(f"{run}: not a finished pre-training run (want summary.json and model/config.json)")
    summary = load_summary(run)
    recipe = json.loads((run / "pretrain_config.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for file in KEPT:
            if (run / "model" / file).is_file() and file != WEIGHTS:
                shutil.copyfile(run / "model" / file, tmp / file)
        dtype = copy_weights(run / "model" / WEIGHTS, tmp / WEIGHTS, max_fp32_mb)
        config = json.loads((tmp / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps({**config, "dtype": dtype}, indent=2) + "\n")
        quality = summary.get("quality", {})
        if dtype != "float32" or "mlm_accuracy" not in quality:
            quality = measured_quality(tmp, run, root)
        facts = card_facts(tmp, run, summary, recipe, quality, hardware=hardware, dtype=dtype, name=name)
        (tmp / CARD).write_text(model_card(facts), encoding="utf-8")
        check_loads(tmp)
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return facts


def check_loads(folder: Path) -> None:
    """The folder loads in transformers (as a BERT masked LM) and in tinylm, with the same parameter count."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    hf = AutoModelForMaskedLM.from_pretrained(str(folder))
    ours = load_model(folder, head="mlm")
    assert hf.config.model_type == "bert", hf.config.model_type
    assert ours.cfg.hidden_size == hf.config.hidden_size and ours.cfg.vocab_size == hf.config.vocab_size
    assert len(AutoTokenizer.from_pretrained(str(folder))) == len(load_tokenizer(folder))


def card_facts(folder: Path, run: Path, summary: dict[str, Any], recipe: dict[str, Any], quality: dict[str, Any],
               *, hardware: str, dtype: str, name: str) -> dict[str, Any]:
    model = load_model(folder, head="mlm")
    cfg = model.cfg
    return {
        "name": name, "run": run.name, "hardware": hardware, "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_mb": round((folder / WEIGHTS).stat().st_size / 2**20, 2),
        "shape": {"layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                  "intermediate": cfg.intermediate_size, "positions": cfg.max_position_embeddings,
                  "vocab": cfg.vocab_size},
        "recipe": recipe, "summary": {k: v for k, v in summary.items() if k != "quality"}, "quality": quality,
    }


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _code(token: str) -> str:
    """A token as a table cell's code span (a | would end the cell)."""
    return "`" + token.replace("|", "\\|") + "`"


def _hours(seconds: float) -> str:
    h, m = divmod(round(seconds / 60), 60)
    exact = f"{seconds:,.0f} s"
    return exact if seconds < 60 else f"{h} h {m:02d} min, {exact}" if h else f"{m} min, {exact}"


def _data_lines(recipe: dict[str, Any], summary: dict[str, Any], quality: dict[str, Any]) -> list[str]:
    if recipe.get("corpus"):
        return [f"- Corpus: `{recipe['corpus']}` (field `{recipe.get('text_field', 'text')}`), "
                f"{summary['articles']:,} documents, the first {recipe['seq_len']} tokens of each."]
    held = quality.get("heldout_articles")
    return [
        f"- **{summary['articles']:,} openings of English Wikipedia articles** (the project's data folder, "
        "`wikipedia/articles.jsonl.gz`: 51,959 articles from two public WikiExtractor dumps, each opening cut to at "
        "most 1,500 characters; titles, headings, stubs and list pages removed), drawn with data seed "
        f"{recipe['data_seed']}; the first {recipe['seq_len']} tokens of each.",
        f"- Held out: the last {held} articles of the same permutation, never trained on (the held-out figures below)."
        if held else "- No held-out articles (see the held-out section).",
        "- Licence of the text: Wikipedia's, **CC BY-SA 4.0** (https://creativecommons.org/licenses/by-sa/4.0/); "
        "the tinylm code is MIT.",
    ]


def model_card(f: dict[str, Any]) -> str:
    """The model card: readable as it is, without loading anything."""
    r, s, q, shape = f["recipe"], f["summary"], f["quality"], f["shape"]
    lines = [
        "---", "language: en", "library_name: transformers", "pipeline_tag: fill-mask", "tags: [bert, tinylm]", "---",
        "", f"# {f['name']}: a tiny BERT pre-trained on Wikipedia openings", "",
        f"A {shape['layers']}-layer, {shape['hidden']}-wide BERT ({f['parameters']:,} parameters, {shape['heads']} "
        f"heads, {shape['intermediate']} intermediate, {shape['positions']} positions) with a {shape['vocab']:,}-token "
        "lower-cased WordPiece vocabulary (tinylm's `tinylm-wiki-4k`), pre-trained with masked language modelling "
        "by `tinylm pretrain`. It ships inside the tinylm package as the starting point of `tinylm finetune`. "
        f"Weights: `{WEIGHTS}`, {f['dtype']}, {f['weights_mb']} MB; a plain Hugging Face BERT folder.", "",
        "## Use", "", "```bash",
        "tinylm finetune --preset demo --task ag_news --out runs/ag        # starts from this model by default",
        "tinylm finetune --preset demo --train-file my.csv --test-fraction 0.2 --out runs/mine",
        "tinylm finetune --preset demo --init scratch --task ag_news --out runs/ag-scratch   # its from-scratch twin",
        f"tinylm pretrain --preset demo --init {f['name']} --corpus my_domain.txt --out runs/domain  # continue",
        "```", "", "```python", "from transformers import pipeline", "from tinylm.checkpoint import shipped_model", "",
        f'fill = pipeline("fill-mask", model=str(shipped_model("{f["name"]}")))  # this folder',
        'fill("the capital of france is [MASK].")', "```", "",
        "## Data", "", *_data_lines(r, s, q), "",
        "## Recipe", "",
        f"Masked language modelling, {r['mask_prob']:.0%} of the tokens masked (BERT's 80/10/10), "
        f"batch {r['batch_size']}, "
        f"AdamW lr {r['lr']:g} (weight decay {r['weight_decay']:g}, {r['warmup_ratio']:.0%} warm-up, linear decay "
        f"set {'every optimizer step' if r['schedule'] == 'step' else 'once per epoch'}), gradient clip "
        f"{r['grad_clip']:g}, {_count(r['epochs'], 'epoch')}, {r['precision']} precision, seed {r['seed']}. "
        "The full config is `tinylm_meta.json`'s `pretrain`.", "",
        f"- **{s['steps']:,} optimizer steps**, {s['tokens']:,} tokens.",
        f"- Training time {_hours(s['seconds'])} (the training loop; {_count(s['processes'], 'process', 'processes')} "
        f"on `{s['device']}`). Hardware: {f['hardware']}.", "",
        "## Held-out quality", "",
    ]
    if "mlm_accuracy" in q:
        cloze = q["cloze"]
        lines += [
            f"On {q['heldout_articles']} held-out openings, {q['heldout_positions']:,} scored positions (a fixed, "
            f"seeded {EVAL_MASK_PROB:.0%} of the tokens, all replaced by [MASK]; `tinylm.train.mlm_quality`):", "",
            "| | masked-token loss | top-1 accuracy |", "|---|---|---|",
            f"| {f['name']} | {q['mlm_loss']:.3f} | **{q['mlm_accuracy']:.1%}** |",
            f"| unigram baseline (no context) | {q['unigram_loss']:.3f} | {q['unigram_accuracy']:.1%} |", "",
            f"Cloze probe ({cloze['items']} sentences with one [MASK] and a known one-token answer): top-1 "
            f"{cloze['top1']:.0%}, top-5 {cloze['top5']:.0%}.", "",
            "| sentence | answer | top 5 |", "|---|---|---|",
            *(f"| {a['sentence']} | {a['answer']} | {' '.join(_code(t) for t in a['top5'])} |"
              for a in cloze["answers"]), "",
        ]
    else:
        lines += [f"Not measured: {q.get('skipped', 'no held-out set')}.", ""]
    lines += [
        "## Fine-tuning evidence", "",
        "Fine-tuned against its from-scratch twin (`--init scratch`) on the built-in tasks and the example CSV: "
        "tinylm's `docs/results/shipped/report.md` and `docs/pretrained_model.md`.", "",
        "## Intended use", "",
        "- A starting point for small English text classifiers fine-tuned and served on a CPU (`tinylm finetune`, "
        "`predict`, `serve`, `export onnx`), where a few hundred labelled examples are all there is.",
        "- Continued pre-training on a domain corpus (`tinylm pretrain --init`), and teaching or experiments on what "
        "pre-training buys a small model.", "",
        "## Limits", "",
        f"- Tiny: {f['parameters'] / 1e6:.1f} M parameters, about a hundredth of BERT-base; its masked-token accuracy "
        "above means it gets most masked words wrong. Expect a few points over training from scratch, not "
        "BERT-base accuracy.",
        f"- English only, lower-cased, {shape['vocab']:,} word pieces, at most {shape['positions']} tokens per text "
        "(longer texts are cut).",
        "- Trained on encyclopedic openings only: other registers (chat, legal, medical, code) are far from what it "
        "saw; continue pre-training on your corpus for those.",
        "- It carries the biases of Wikipedia's text and was not evaluated for them; not for decisions about people, "
        "and not a text generator.", "",
        f"Built by `scripts/build_shipped_model.py` from the run `{f['run']}`.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished `tinylm pretrain` run folder")
    p.add_argument("--out", default=str(SHIPPED_MODELS[NAME]), help="the folder to write (default: the shipped one)")
    p.add_argument("--hardware", required=True, help="what it trained on, as the card states it")
    p.add_argument("--data", default=None, help="data folder, for measuring bf16 weights (default: $TINYLM_DATA)")
    p.add_argument("--max-fp32-mb", type=float, default=MAX_FP32_MB)
    args = p.parse_args(argv)
    facts = build(args.run, args.out, hardware=args.hardware, root=args.data, max_fp32_mb=args.max_fp32_mb)
    q = facts["quality"]
    print(json.dumps({"folder": args.out, "dtype": facts["dtype"], "weights_mb": facts["weights_mb"],
                      "parameters": facts["parameters"], "steps": facts["summary"]["steps"],
                      "mlm_accuracy": q.get("mlm_accuracy"), "cloze_top1": q.get("cloze", {}).get("top1"),
                      "cloze_top5": q.get("cloze", {}).get("top5")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
