"""Periodic tasks: the entries of ``beat_schedule``, the store beat processes share, and the
beat loop (leader and standbys) behind ``qtui beat`` and ``qtui run-worker -B``."""
