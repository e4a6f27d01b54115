"""Offline training pipeline (never imported by the daemon): run its stages as `python -m training.<stage>`."""
