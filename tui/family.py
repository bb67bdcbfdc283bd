"""A task's family: the tasks of one workflow (chain, group, chord, link) as a tree.

Events say only ``root_id`` (the workflow's first task) and ``parent_id`` (the task that sent
this one), as Celery's do; children are the tasks that name a task as their parent. The index
is kept by the console model as snapshots arrive, so a task detail draws its family without
looking at every task in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .rows import TaskRow

#: Tasks drawn in one family tree: a group of thousands stays a readable, bounded tree.
MAX_MEMBERS = 500


@dataclass
class Member:
    """One node of a family tree: a task id, the task if still in memory, and its children."""

    id: str
    task: TaskRow | None
    children: list[Member] = field(default_factory=list)


class Family:
    """Children by parent id and members by root id, of the tasks in the console's memory."""

    def __init__(self) -> None:
        self._children: dict[str, dict[str, None]] = {}
        self._members: dict[str, dict[str, None]] = {}

    def add(self, task: TaskRow, old: TaskRow | None) -> None:
        """Index ``task`` (``old`` is what the model held for it before, if anything)."""
        if old is not None and (old.parent_id, old.root_id) != (task.parent_id, task.root_id):
            self.remove(old)
        if task.parent_id:
            self._children.setdefault(task.parent_id, {})[task.id] = None
        if task.root_id and task.root_id != task.id:
            self._members.setdefault(task.root_id, {})[task.id] = None

    def remove(self, task: TaskRow) -> None:
        for index, key in ((self._children, task.parent_id), (self._members, task.root_id)):
            ids = index.get(key)
            if ids is not None:
                ids.pop(task.id, None)
                if not ids:
                    del index[key]

    def tree(self, task_id: str, tasks: Mapping[str, TaskRow]) -> Member | None:
        """The family of ``task_id`` from its root down, or None when it has none (no parent,
        no root other than itself, no children). Members whose parent is no longer in memory
        hang from the root."""
        task = tasks.get(task_id)
        root = self._root(task_id, tasks)
        if root == task_id and task_id not in self._children and task_id not in self._members:
            return None
        placed = {root}
        top = self._subtree(root, tasks, placed)
        for other in self._members.get(root, ()):
            if len(placed) >= MAX_MEMBERS:
                break
            if other not in placed and tasks.get(other) is not None \
                    and tasks[other].parent_id not in tasks:
                placed.add(other)
                top.children.append(self._subtree(other, tasks, placed))
        if task is not None and task_id not in placed:  # a cycle or a cut-off: still shown
            top.children.append(Member(task_id, task))
        return top

    def _subtree(self, task_id: str, tasks: Mapping[str, TaskRow], placed: set[str]) -> Member:
        """``task_id`` and its descendants not yet ``placed``, breadth first."""
        top = Member(task_id, tasks.get(task_id))
        queue = deque([top])
        while queue and len(placed) < MAX_MEMBERS:
            member = queue.popleft()
            for child in self._children.get(member.id, ()):
                if child not in placed and len(placed) < MAX_MEMBERS:
                    placed.add(child)
                    node = Member(child, tasks.get(child))
                    member.children.append(node)
                    queue.append(node)
        return top

    def _root(self, task_id: str, tasks: Mapping[str, TaskRow]) -> str:
        """The workflow's first task: the root id the task names, else the furthest ancestor
        still in memory."""
        task = tasks.get(task_id)
        if task is None:
            return task_id
        if task.root_id:
            return task.root_id
        seen = {task_id}
        while task.parent_id and task.parent_id not in seen:
            seen.add(task.parent_id)
            parent = tasks.get(task.parent_id)
            if parent is None:
                return task.parent_id
            task = parent
        return task.id
