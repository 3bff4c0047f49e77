"""Recipes: the paper's experiments, each a config (scale) plus a short module that runs and reports it."""
