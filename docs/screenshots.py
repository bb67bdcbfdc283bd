"""Regenerate the README's screenshots: ``.venv/bin/python docs/screenshots.py``.

Each view of the console is drawn on the fixed cluster the layout tests use
(``tests/console_data.py``) and saved as an SVG by Textual's screenshot support.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.console_data import FixedConsole, MetricsConsole  # noqa: E402

SHOTS = {
    "overview": [],
    "workers": ["2"],
    "tasks": ["3"],
    "task-detail": ["colon", *"tasks args:19.99", "enter", "enter"],
    "queues": ["4"],
    "help": ["3", "question_mark"],
    "overview-80x24": [],
    "task-detail-80x24": ["colon", *"tasks args:19.99", "enter", "enter"],
}
SIZES = {"help": (140, 60), "overview-80x24": (80, 24), "task-detail-80x24": (80, 24)}


async def shoot(name: str, keys: list[str]) -> None:
    console = FixedConsole()
    async with console.run_test(size=SIZES.get(name, (140, 36))) as pilot:
        await pilot.press(*keys)
        await pilot.pause(0.2)
        console.save_screenshot(f"{name}.svg", str(ROOT / "docs" / "screenshots"))


async def shoot_metrics() -> None:
    """The Metrics view at 80x24, once its thread has read the fixed rollups."""
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        console = MetricsConsole(Path(directory) / "history.sqlite")
        async with console.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await pilot.pause(1.0)
            console.save_screenshot("metrics-80x24.svg", str(ROOT / "docs" / "screenshots"))


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    for name, keys in SHOTS.items():
        asyncio.run(shoot(name, keys))
        print(f"docs/screenshots/{name}.svg")
    asyncio.run(shoot_metrics())
    print("docs/screenshots/metrics-80x24.svg")


if __name__ == "__main__":
    main()
