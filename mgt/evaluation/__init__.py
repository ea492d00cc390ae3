"""Evaluation: feature networks, Fréchet distances, precision / recall and `mgt eval`."""
