"""Celery's built-in tasks that canvas messages name, registered on every App: ``celery.map``
and ``celery.starmap`` are what ``task.map()``, ``task.starmap()`` and ``task.chunks()`` send
(``celery/app/builtins.py``), so a qtui worker runs them from a Celery client or qtui's own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .canvas import signature_of

if TYPE_CHECKING:
    from .app import App


def register(app: App) -> None:
    @app.task(name="celery.map")
    def xmap(task: Any, it: Any) -> list[Any]:
        """The task called here on each item, one after the other."""
        run = app.get_task(signature_of(task)["task"])
        return [run(item) for item in it]

    @app.task(name="celery.starmap")
    def xstarmap(task: Any, it: Any) -> list[Any]:
        """The task called here on each item's arguments, one after the other."""
        run = app.get_task(signature_of(task)["task"])
        return [run(*item) for item in it]
