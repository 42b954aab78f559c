"""Evaluation routines that run a model over held-out data and write a report: image.py, audio.py, dna.py.
The metrics they compute (functions on tensors) live in `gentok.metrics`."""
