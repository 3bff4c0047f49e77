"""Inference for fine-tuned classifiers (a model or a soft committee).

- classify.py: the one prediction path: load_classifier, predict_proba (texts in, probabilities out), by_length
- evaluate.py: metrics on labelled examples (evaluate_model)
- predictor.py: Predictor (texts in, labels and probabilities out) over a torch or ONNX runtime
- onnx.py: `tinylm export onnx` (one graph, checked against PyTorch)

Nothing is imported here, so that `tinylm --help` does not load PyTorch.
"""
