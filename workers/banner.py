"""The banner a worker prints as it starts: its app, broker, results, pool, queues and tasks.

Names come from the cluster and the app (hostname, queues, task names): they are printed as
data through :func:`~qtui.core.display.safe_text`, never as markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qtui.core.config import mask_url
from qtui.core.display import safe_text

if TYPE_CHECKING:
    from .worker import Worker


def print_banner(worker: Worker, console: Console | None = None) -> None:
    console = console or Console(highlight=False, soft_wrap=True)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    app = worker.app
    backend = app.result_backend_url
    table.add_row("app", f"{app.main or '__main__'}")
    table.add_row("broker", mask_url(app.broker_url))
    table.add_row("results", mask_url(backend) if backend else "disabled")
    table.add_row("pool", f"{worker.pool_name} (concurrency {worker.concurrency}, "
                          f"prefetch {worker.base_prefetch or 'unlimited'})")
    table.add_row("queues", safe_text(", ".join(
        f"{q.name} (exchange {q.exchange.name or 'default'}, key {q.routing_key})"
        for q in worker.queues)))
    table.add_row("tasks", safe_text("\n".join(sorted(app.tasks)) or "(none registered)",
                                     multiline=True))
    console.print(Text.assemble(("qtui worker", "bold"), " ", safe_text(worker.hostname)))
    console.print(table)
