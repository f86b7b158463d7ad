"""Corpus preparers (pure functions writing Kaldi-style data dirs) and their helpers."""
