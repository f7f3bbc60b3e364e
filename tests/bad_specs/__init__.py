"""Malformed pipeline specs, one defect each; see corpus.py."""
