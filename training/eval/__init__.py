"""Evaluation sets written for this project, never trained on (see README.md here)."""
