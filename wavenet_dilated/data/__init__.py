"""Corpora and features: LJSpeech metadata, download, the preprocessing cache and the training dataset."""
