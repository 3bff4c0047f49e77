"""tinylm: tiny BERT language models on modest hardware."""

__version__ = "0.1.0"
