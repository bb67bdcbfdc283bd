"""Execution pools: prefork, threads and solo."""
