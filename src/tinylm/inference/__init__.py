"""Inference for fine-tuned classifiers (a model or a soft committee).

- predictor.py: Predictor (texts in, labels and probabilities out) over a torch or ONNX runtime; its torch runtime
  is train/evaluate.py's class_probabilities, the prediction path fine-tuning's evaluation runs
  (committee.load_classifier loads a model or committee folder alike)
- onnx.py: `tinylm export onnx` (one graph, checked against PyTorch)

Nothing is imported here, so that `tinylm --help` does not load PyTorch.
"""
