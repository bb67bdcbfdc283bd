"""Execution pools: prefork, threads and solo, behind one interface (:class:`~.base.Pool`)."""

from __future__ import annotations

from .base import Pool, Report

POOLS = {
    "prefork": "qtui.workers.pools.prefork:PreforkPool",
    "threads": "qtui.workers.pools.threads:ThreadsPool",
    "solo": "qtui.workers.pools.solo:SoloPool",
}

__all__ = ["POOLS", "Pool", "Report", "pool_class"]


def pool_class(name: str) -> type[Pool]:
    """The pool class for a ``--pool`` name."""
    import importlib

    try:
        module, _, attr = POOLS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown pool {name!r}; choose one of {', '.join(POOLS)}") from None
    return getattr(importlib.import_module(module), attr)
