"""The downstream tasks, each a Lightning module runnable as ``python -m tasks.<name>``."""
