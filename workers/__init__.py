"""qtui.workers: the worker process behind ``qtui run-worker``."""
