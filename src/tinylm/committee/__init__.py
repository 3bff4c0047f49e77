"""A soft committee of N tiny BERTs of one configuration, computed in one vectorised pass.

The paper's claim 4: a committee of independently pre-trained and fine-tuned BERT-1s, whose output is the mean of
the members' softmax outputs (the soft vote), matches a pre-trained BERT-6 at a lower latency: the members run side
by side, the BERT-6 runs six layers in series.

How the N members are held and run (model.py, ops.py):

- Parameters are stacked: every parameter of a member model (tinylm.model's BertForClassification or BertForMLM)
  becomes one tensor with a leading member axis, `committee.members.<member name>` of shape [N, *member shape].
  The `members` container has the member model's module tree, so state_dict names are the member's names; its
  modules are never called (their parameters are stacked).
- The forward pass is model.py's (`encode` and the heads), run with ops.py's MemberOps: batched matrix products over
  the member axis, one scaled-dot-product attention call over (members x batch) and grouped convolutions for the
  convolutional variants, so N members cost one op sequence instead of N. torch.vmap over the member model was the
  obvious alternative and is slower on a CPU: there vmap has no batching rule for the flash-attention kernel (it
  falls back to a per-member loop), and nn.Embedding's batching rule copies the whole stacked table on every call
  (benchmarks/committee_latency.py).
- A classifier reads only the [CLS] position of the last layer, so by default that layer computes keys and values
  for every token but queries, attention output and feed-forward for [CLS] only (`cls_only`): the same function
  (equal up to rounding), not an approximation, and most of a BERT-1's FLOPs are in the part [CLS] does not need.
- Inference on a CPU runs the members in chunks sized to the cache (`chunk_elements`): one pass over many members
  and a large batch has activations that make it memory-bound there.
- Inference: the same batch [B, L] goes to every member. Training: either the same batch, or one batch per member,
  [N, B, L] (own data order, own MLM masks); `stack_member_batches` pads a list of ordinary batches to one such
  batch. Dropout masks are drawn independently per member.

Training (tinylm/train/committee_step.py): the loss is the sum of the member losses, so one backward and one
optimizer step train all members independently (their parameters are disjoint, so gradients never mix). AdamW is
elementwise, so AdamW on the stacked tensors equals AdamW on each member, provided the weight-decay groups are
chosen by the member's parameter shape (`make_committee_optimizer`; train.loop.make_optimizer would decay stacked
biases) and gradient clipping is per member (`clip_grad_norm_per_member_`); tests/committee/test_committee.py checks
both against a loop. With fp16 a GradScaler is shared: an overflow in one member skips the step for all of them. The
recipes that pre-train and fine-tune whole committees are in tinylm/train/committee.py.

Votes (votes.py): `soft_vote` and `hard_vote` over per-member probabilities, for any subset of the members.
Texts in, probabilities out goes through tinylm.train.evaluate, as for a single model.

Persistence (io.py): `save_committee` writes one folder (config.json with model_type "tinylm_committee", the member
count, the member config and the labels; model.safetensors with the stacked tensors under Hugging Face BERT names,
member axis first; tokenizer files). `load_committee` reads it; `extract_member` writes member i as an ordinary
model folder, which tinylm's load_model and, for plain BERTs, transformers load. `load_classifier` loads a
fine-tuned model or committee folder alike.
"""

from tinylm.committee.io import (
    COMMITTEE_MODEL_TYPE,
    FORMAT_VERSION,
    extract_member,
    is_committee_folder,
    load_classifier,
    load_committee,
    save_committee,
)
from tinylm.committee.model import (
    CHUNK_ELEMENTS,
    HEADS,
    ClassifierModel,
    Committee,
    CommitteeOutput,
    Member,
    build_member,
)
from tinylm.committee.votes import hard_vote, soft_vote

__all__ = [
    "CHUNK_ELEMENTS",
    "COMMITTEE_MODEL_TYPE",
    "FORMAT_VERSION",
    "HEADS",
    "ClassifierModel",
    "Committee",
    "CommitteeOutput",
    "Member",
    "build_member",
    "extract_member",
    "hard_vote",
    "is_committee_folder",
    "load_classifier",
    "load_committee",
    "save_committee",
    "soft_vote",
]
