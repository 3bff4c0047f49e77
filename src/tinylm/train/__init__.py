"""Training: every recipe runs the one resumable loop.

- loop.py: the training loop (resumable from its checkpoint, data-parallel under torchrun), optimizer and step
- run.py: the start and finish every trainer shares (threads, device, process group, config, meta, barrier)
- pretrain.py: MLM pre-training; mlm_quality.py: held-out MLM quality
- finetune.py: sequence-classification fine-tuning; evaluate.py: class probabilities and metrics (the one
  prediction path, which inference/ serves)
- distill.py, distill_config.py: a student distilled from a fine-tuned model or committee
- committee.py, committee_step.py, committee_blocks.py: committees pre-trained and fine-tuned as one stacked module

Nothing is imported here, so that `tinylm --help` does not load PyTorch.
"""
