"""Celery's canvas on the wire: signatures as the dicts Celery sends, and how to apply them.

A signature is Celery's dict ``{"task", "args", "kwargs", "options", "subtask_type",
"immutable", "chord_size"}``: ``subtask_type`` is None for one task, else ``"group"``,
``"chain"`` or ``"chord"``. A worker applies what a finished task carries (link, link_error, the
rest of a chain, a chord body) with :func:`apply`, the way ``Signature.apply_async`` does in
``celery/canvas.py``, so the next message is the one a Celery worker would have sent.
The client's :class:`Signature`, :class:`chain`, :class:`group`, :class:`chord`, ``xmap``,
``xstarmap`` and :class:`chunks` build the same dicts and freeze ids where Celery's client does.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .exceptions import CanvasError
from .protocol import new_id, stamped_header_names
from .result import AsyncResult, GroupResult

if TYPE_CHECKING:
    from .app import App

#: Signature options that are ``App.send_task`` options of the same name and meaning: every
#: key of :class:`~qtui.core.task.SendOptions` (which imports this module, hence the copy).
_SEND_OPTIONS = frozenset({
    "task_id", "group_id", "group_index", "queue", "routing_key", "exchange", "priority",
    "countdown", "eta", "expires", "time_limit", "soft_time_limit", "headers", "parent_id",
    "root_id", "reply_to", "serializer", "compression", "retries", "ignore_result", "link",
    "link_error", "chain", "chord", "argsrepr", "kwargsrepr", "shadow", "stamped_headers",
    "stamps",
})
#: The options of :class:`~qtui.core.task.SendOptions` about how a call is published, not
#: what its message says (``retry``, ``retry_policy``, ...): a client's call passes them on;
#: a worker's send of what a message carried leaves them out (a Celery client's signatures
#: may carry any of them, valid here or not).
_PUBLISH_OPTIONS = frozenset({"retry", "retry_policy", "producer", "publisher", "connection",
                              "add_to_parent"})
_CLIENT_OPTIONS = _SEND_OPTIONS | _PUBLISH_OPTIONS


#: Set while :func:`send_one` calls a task's ``apply_async`` override for what must not be
#: checked (a worker's follow-up): ``Task.apply_async`` reached from the override then does
#: not check the arguments either, so the task before keeps its success.
UNCHECKED: ContextVar[bool] = ContextVar("qtui_canvas_unchecked", default=False)

#: The ``subtask_type`` of a signature that is one task message (a map is one task:
#: ``celery.map`` or ``celery.starmap``).
ONE_TASK = (None, "xmap", "xstarmap")


def signature_of(value: Any) -> dict[str, Any]:
    """A signature dict from what arrived in a message; anything else is a CanvasError."""
    if not isinstance(value, Mapping) or not isinstance(value.get("task"), str):
        raise CanvasError(f"not a signature: {value!r:.200}")
    sig = dict(value)
    sig["args"] = tuple(sig.get("args") or ())
    sig["kwargs"] = dict(sig.get("kwargs") or {})
    sig["options"] = dict(sig.get("options") or {})
    return sig


def apply(app: App, value: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None,
          *, strict: bool = False, **options: Any) -> str:
    """Send a signature with ``args`` prepended to its own (unless it is immutable) and
    ``options`` over its own, as ``Signature.apply_async`` does; returns the id it runs under
    (a task's id, a group's id, a chord body's id). ``strict``: a client's call (its
    publishing options, ``retry`` and the like, are used; see :func:`send_options`)."""
    # a Signature is in shape already (and is not changed here); anything else is checked
    sig = value if type(value) is Signature else signature_of(value)
    kind = sig.get("subtask_type")
    if kind in ONE_TASK:
        send = send_options({**sig["options"], **options}, strict=strict)
        result = send_one(app, sig, args, kwargs, send, check=False, own_way=True)
        # an override's return is its own (Celery ignores it): the id is the one it was given
        return str(send.get("task_id") or result.id)
    # a group's, chain's or chord's own kwargs hold its parts: ``kwargs`` go to those parts
    args = _arguments(sig, args, None)[0]
    merged = {**sig["options"], **options}
    if kind == "chunks":
        return _apply_group(app, _chunks_group(sig), (), None, merged)
    if kind == "group":
        return _apply_group(app, sig, args, kwargs, merged)
    if kind == "chain":
        return _apply_chain(app, sig, args, kwargs, merged)
    if kind == "chord":
        return _apply_chord(app, sig, args, kwargs, merged)
    raise CanvasError(f"a {kind!r} signature ({sig['task']}) cannot be applied by qtui; "
                      "supported: a task, group, chain, chord, map, starmap, chunks")


def send_one(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
             kwargs: Mapping[str, Any] | None, send: dict[str, Any], *, check: bool,
             own_way: bool) -> Any:
    """Send ``sig``, a signature of one task message (:data:`ONE_TASK`), with ``args`` put
    first (unless it is immutable) and ``send``, its options as ``send_options`` makes them
    (a dict this may change), and return its result: a task registered on ``app`` with its
    own routing and options (as its ``apply_async`` sends it, and Celery's signatures),
    another by name. ``check``: a registered task's arguments are checked (``typing``)
    first. :func:`apply` does not check them: what a worker sends after a task (a chain
    step, a link, an errback, a chord body) goes out as it is and fails when it runs, so
    neither the task that sent it nor the chord waiting for it is failed for it.
    ``own_way``: a task whose ``apply_async`` is overridden is sent through it (and returns
    what that returns), as Celery's ``Signature.apply_async`` calls ``self.type.apply_async``,
    with a ``task_id`` set in ``send`` first; a group passes False when no task of its app
    has one, so its members need not be asked."""
    args, kwargs = _arguments(sig, args, kwargs)
    name = sig["task"]
    task = app.tasks.get(name)
    if task is None:
        return app.send_task(name, args, kwargs, **send)  # the message copies both
    if own_way and _sends_its_own_way(task):
        send["task_id"] = send.get("task_id") or new_id()
        if check:
            return task.apply_async(args, kwargs, **send)
        token = UNCHECKED.set(True)
        try:
            return task.apply_async(args, kwargs, **send)
        finally:
            UNCHECKED.reset(token)
    return task.send_call(args, kwargs, send, check=check)  # type: ignore[arg-type]


def _sends_its_own_way(task: Any) -> bool:
    """Whether ``task`` is sent through its own ``apply_async``: its class overrides it, or one
    is patched on the task itself (``mock.patch.object``), as Celery's signatures call
    ``self.type.apply_async``."""
    return bool(task.overrides_apply_async or "apply_async" in task.__dict__)


def _arguments(sig: Mapping[str, Any], args: Any, kwargs: Mapping[str, Any] | None
               ) -> tuple[Any, Mapping[str, Any]]:
    """The arguments ``sig`` runs with: ``args`` put first and ``kwargs`` over its own, or its
    own as they are when it is immutable (nothing copied that need not be)."""
    if sig.get("immutable"):
        return sig["args"], sig["kwargs"]
    return ((*args, *sig["args"]) if args else sig["args"],
            {**sig["kwargs"], **kwargs} if kwargs else sig["kwargs"])


def send_options(options: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """A signature's options as ``send_task`` options (dates that travelled as text parsed,
    Celery's stamps gathered into ``stamps``), in a new dict. ``strict`` (a client's call):
    an option no message of qtui's carries is a TypeError (:func:`check_options`), and the
    publishing options are kept; else both are left out, as what a Celery client put in a
    message is when a worker sends what follows a task. The stamps a signature carries go
    on, as Celery's worker sends them: each stamped header is an option of its own."""
    if not options:  # most signatures of a bulk send
        return {}
    known = _CLIENT_OPTIONS if strict else _SEND_OPTIONS
    send = {k: v for k, v in options.items() if k in known and v is not None}
    if strict and len(send) < len(options):
        _refuse_unknown("a signature", options)
    if send.get("stamped_headers"):
        send["stamped_headers"] = stamp_names(options)
        send["stamps"] = _stamps(options)
    if isinstance(send.get("eta"), str):
        send["eta"] = datetime.fromisoformat(send["eta"])
    if isinstance(send.get("expires"), str):
        send["expires"] = datetime.fromisoformat(send["expires"])
    return send


def check_options(sig: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Raise TypeError when ``options`` or an option of ``sig`` or of one of its parts is not
    one qtui sends. Celery's client hands every option to ``Task.apply_async``, which puts
    one it does not know in the message's properties; qtui's messages carry
    :class:`~qtui.core.task.SendOptions` only, so it refuses the rest rather than drop them."""
    _refuse_unknown(sig["task"], options)
    _refuse_unknown(sig["task"], sig.get("options") or {})
    kind = sig.get("subtask_type")
    if kind in ONE_TASK:
        return
    own = sig.get("kwargs") or {}
    if kind in ("group", "chain"):
        parts = list(own.get("tasks") or ())
    elif kind == "chord":
        header = own.get("header")
        parts = [own.get("body"), *([header] if isinstance(header, Mapping) else header or ())]
    else:
        return
    for part in parts:
        if isinstance(part, Mapping):
            check_options(part, {})


def _refuse_unknown(name: str, options: Mapping[str, Any]) -> None:
    if options and not _CLIENT_OPTIONS.issuperset(options):
        unknown = options.keys() - _CLIENT_OPTIONS - set(stamp_names(options))
        if not unknown:  # Celery's stamps: options named by stamped_headers
            return
        raise TypeError(f"{name}: qtui cannot send option(s) {sorted(unknown)} (Celery puts "
                        "them in the message's properties); a signature's options are "
                        f"Task.apply_async's: {', '.join(sorted(_CLIENT_OPTIONS))}")


def stamp_names(options: Mapping[str, Any]) -> list[str]:
    """The options that are Celery stamps: those ``stamped_headers`` names
    (:func:`~qtui.core.protocol.stamped_header_names`)."""
    return stamped_header_names(options.get("stamped_headers")) or []


def _stamps(options: Mapping[str, Any]) -> dict[str, Any]:
    """The stamps ``options`` carry: the ``stamps`` mapping, and Celery's form over it (each
    stamp an option of its own, named by ``stamped_headers``)."""
    return {**(options.get("stamps") or {}),
            **{name: options[name] for name in stamp_names(options) if name in options}}


def gather_stamps(options: Mapping[str, Any]) -> dict[str, Any]:
    """A send's ``options`` with the stamps given in Celery's form
    (``apply_async(stamped_headers=["a"], a=1)``) gathered into the ``stamps`` mapping that
    :class:`~qtui.core.task.SendOptions` takes."""
    names = stamp_names(options)
    gathered = {k: v for k, v in options.items() if k not in names or k in _CLIENT_OPTIONS}
    gathered["stamps"] = _stamps(options)
    return gathered


def celery_stamps(options: Mapping[str, Any]) -> dict[str, Any]:
    """A signature's ``options`` with a ``stamps`` mapping written in Celery's form, the one a
    Celery worker reads when it sends the signature: each stamp an option of its own, named
    by ``stamped_headers`` (a Celery worker fails a task whose link has only the mapping)."""
    stamps = options.get("stamps")
    if not isinstance(stamps, Mapping):  # left for the send to refuse
        return dict(options)
    written = {k: v for k, v in options.items() if k != "stamps"}
    written.update(stamps)
    written["stamped_headers"] = list(dict.fromkeys([*stamp_names(options), *stamps]))
    return written


def _chunks_group(sig: Mapping[str, Any]) -> dict[str, Any]:
    """Celery's ``chunks.group()``: ``it`` cut in parts of ``n``, each part one starmap task."""
    task, it, n = (sig["kwargs"].get(k) for k in ("task", "it", "n"))
    if not isinstance(n, int) or n < 1 or not isinstance(it, (list, tuple)):
        raise CanvasError(f"chunks needs a list 'it' and a size n >= 1: {sig!r:.200}")
    parts = [list(it[i:i + n]) for i in range(0, len(it), n)]
    return {"task": "celery.group", "subtask_type": "group", "args": (), "options": {},
            "kwargs": {"tasks": [_map_signature("celery.starmap", "xstarmap", task, part)
                                 for part in parts]}}


def _map_signature(name: str, kind: str, task: Any, it: Any) -> dict[str, Any]:
    return {"task": name, "subtask_type": kind, "args": (), "immutable": True, "options": {},
            "kwargs": {"task": task, "it": list(it)}}


def _tasks_of(sig: Mapping[str, Any]) -> list[Any]:
    tasks = sig["kwargs"].get("tasks")
    if not isinstance(tasks, (list, tuple)):
        raise CanvasError(f"a {sig.get('subtask_type')} signature without its tasks: {sig!r:.200}")
    return list(tasks)


def _apply_group(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
                 kwargs: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
    """Each task with the group's id and its index (and ``args`` and ``kwargs``), as
    ``group._apply_tasks`` sends them."""
    group_id = options.pop("task_id", None) or new_id()
    inherited = _inherited(options)
    with app.sending_batch(discard_on_error=True):  # pipelined, as app.send_many sends
        for index, task in enumerate(_tasks_of(sig)):
            apply(app, task, args, kwargs, group_id=group_id, group_index=index, **inherited)
    return group_id


def _apply_chain(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
                 kwargs: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
    """The first step now, with ``args`` and ``kwargs``; the rest travels reversed in its
    message's ``chain`` field, ahead of what an enclosing chain still has to run. ``link``
    goes to the last step, ``link_error`` to every step."""
    tasks = [signature_of(t) for t in _tasks_of(sig)]
    if not tasks:
        raise CanvasError("an empty chain cannot be applied")
    if any(t.get("subtask_type") == "group" for t in tasks[:-1]):
        raise CanvasError("a chain with a group before its last step must be sent as a chord "
                          "(Celery's client does this); qtui's worker does not rewrite it")
    _add_links(tasks, options)
    rest = list(options.get("chain") or []) + tasks[:0:-1]
    inherited = {k: v for k, v in _inherited(options).items() if k not in ("link", "link_error")}
    return apply(app, tasks[0], args, kwargs, chain=rest or None, **inherited)


def _apply_chord(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
                 kwargs: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
    """The header tasks as one group carrying the body in their ``chord`` field; the backend
    joins them (``set_chord_size`` first, as ``group._apply_tasks`` does). ``args`` and
    ``kwargs`` (over the chord's own ``kwargs``) go to each header task, as in Celery's
    ``chord.run``; the body gets the header's results only."""
    header, body = sig["kwargs"].get("header"), sig["kwargs"].get("body")
    kwargs = {**(sig["kwargs"].get("kwargs") or {}), **(kwargs or {})}
    if body is None:
        raise CanvasError(f"a chord without a body: {sig!r:.200}")
    if isinstance(header, Mapping):
        header_sig = signature_of(header)
        tasks, group_id = _tasks_of(header_sig), header_sig["options"].get("task_id")
    else:
        tasks, group_id = list(header or ()), None
    # A chord's own task_id is its header's group id (as Celery's client freezes it).
    group_id = group_id or options.pop("task_id", None) or new_id()
    options.pop("task_id", None)
    body_sig = signature_of(body)
    body_id = body_sig["options"].get("task_id") or new_id()
    root_id = options.get("root_id")
    body_sig["options"].update(task_id=body_id, group_id=group_id)
    # What follows the chord in a chain, and its links, belong to the body (Celery's chord.run).
    for key in ("chain", "link", "link_error"):
        if options.get(key):
            body_sig["options"][key] = options.pop(key)
    if root_id:
        body_sig["options"]["root_id"] = root_id
    if not tasks:
        apply(app, body_sig, ([],))
        return body_id
    for task in tasks:
        if signature_of(task).get("subtask_type") is not None:
            raise CanvasError("a chord header of groups, chains or chords is not supported by "
                              "qtui's worker; make each header part one task")
    app.backend.set_chord_size(group_id, len(tasks))
    inherited = _inherited(options)
    with app.sending_batch(discard_on_error=True):
        for index, task in enumerate(tasks):
            apply(app, task, args, kwargs, group_id=group_id, group_index=index,
                  chord=body_sig, **inherited)
    return body_id


def _unchained(inner: Mapping[str, Any], app: App | None) -> list[Signature]:
    """The steps of a chain put in another, as Celery's ``unchain_tasks`` gives them: copies,
    the chain's ``link`` on its last step and its ``link_error`` on each."""
    steps = [Signature.from_dict(t, app) for t in _tasks_of(inner)]
    _add_links(steps, inner.get("options") or {})
    return steps


def _add_links(steps: list[Any], options: Mapping[str, Any]) -> None:
    """A chain's ``link`` added to its last step's own, its ``link_error`` to each step's own,
    as Celery's chain adds them (new lists in the steps' option dicts: the caller's stay)."""
    links = _as_list(options.get("link"))
    if links:
        own = steps[-1]["options"]
        own["link"] = [*_as_list(own.get("link")), *links]
    errbacks = _as_list(options.get("link_error"))
    for step in steps if errbacks else ():
        step["options"]["link_error"] = [*_as_list(step["options"].get("link_error")),
                                         *errbacks]


def _as_list(value: Any) -> list[Any]:
    """A link option (one signature or a list of them) as a list."""
    if not value:
        return []
    return [value] if isinstance(value, Mapping) else list(value)


def _inherited(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a group or chain hands down to its parts (not its own id or canvas fields)."""
    return {k: v for k, v in options.items()
            if k not in ("task_id", "group_id", "group_index", "chain", "chord")}


class Signature(dict[str, Any]):
    """One task call to make later (Celery's ``signature``): a dict in Celery's layout, so it
    travels in messages as it is. ``add.s(2)`` is mutable (a chain or link puts the previous
    result first), ``add.si(2, 2)`` immutable."""

    # a dict and weak references as Celery's Signature takes (created only when used)
    __slots__ = ("__dict__", "__weakref__", "_app")

    def __init__(self, task: Any, args: Any = None, kwargs: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, subtask_type: str | None = None,
                 immutable: bool = False, app: App | None = None) -> None:
        named = isinstance(task, str)
        # item by item: cheaper than keyword arguments (bulk sends make one per task)
        self["task"] = task if named else task.name
        self["args"] = tuple(args) if args else ()
        self["kwargs"] = dict(kwargs) if kwargs else {}
        self["options"] = {} if not options else dict(options) if "stamps" not in options \
            else celery_stamps(options)
        self["subtask_type"] = subtask_type
        self["immutable"] = bool(immutable)
        self["chord_size"] = None
        self._app = app if app is not None or named else task.app

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], app: App | None = None) -> Signature:
        """A signature (or chain, group, chord) from its dict, as a message carries it."""
        if isinstance(value, Mapping) and value.get("subtask_type") is None \
                and isinstance(value.get("task"), str):  # one task: copied once, here
            return cls(value["task"], value.get("args"), value.get("kwargs"),
                       value.get("options"), None, bool(value.get("immutable")),
                       app or getattr(value, "_app", None))
        sig = signature_of(value)
        kind = sig.get("subtask_type")
        if kind == "chain":
            return chain(*_tasks_of(sig), app=app, **sig["options"])
        if kind == "group":
            return group(_tasks_of(sig), app=app, **sig["options"])
        if kind == "chord":
            return chord(sig["kwargs"]["header"], sig["kwargs"]["body"], app=app,
                         **sig["options"])
        if kind == "chunks":
            return chunks(Signature.from_dict(sig["kwargs"]["task"], app), sig["kwargs"]["it"],
                          sig["kwargs"]["n"], app=app, **sig["options"])
        return cls(sig["task"], sig["args"], sig["kwargs"], sig["options"], kind,
                   bool(sig.get("immutable")), app or getattr(value, "_app", None))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its dict alone, as Celery's: the app is not pickled; the copy that comes
        back (a chain, group or chord by its ``subtask_type``) uses the current app."""
        return signature, (dict(self),)

    @property
    def app(self) -> App:
        if self._app is None:
            from .app import current_app
            self._app = current_app()
        return self._app

    name = property(lambda self: self["task"])
    args = property(lambda self: self["args"])
    kwargs = property(lambda self: self["kwargs"])
    options = property(lambda self: self["options"])
    immutable = property(lambda self: self["immutable"])
    id = property(lambda self: self["options"].get("task_id"))

    def clone(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy with ``args`` put first (unless immutable), ``kwargs`` and ``options`` added."""
        copy = Signature.from_dict(self, app=self._app)
        if not self.immutable:
            copy["args"] = tuple(args or ()) + tuple(self.args)
            copy["kwargs"] = {**self.kwargs, **(kwargs or {})}
        copy["options"].update(celery_stamps(options) if "stamps" in options else options)
        return copy

    def set(self, **options: Any) -> Signature:
        """Add ``options``; stamps given as a ``stamps`` mapping are written in Celery's form."""
        self["options"].update(celery_stamps(options) if "stamps" in options else options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run ``callback`` with this task's result after it succeeds."""
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Call ``errback`` when this task fails (see the README's Canvas section)."""
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    def freeze(self, task_id: str | None = None, **options: Any) -> Any:
        """Fix the id this will run under (and ``options``); returns its result handle."""
        self["options"].update(options)
        self["options"]["task_id"] = task_id or self.id or new_id()
        reply_to = self.app.send_settings.backend.reply_to()
        if reply_to and "reply_to" not in self["options"]:  # rpc://: results come back here
            self["options"]["reply_to"] = reply_to
        return AsyncResult(self.id, app=self.app, task_name=self.name)

    def apply_async(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send it; returns the result handle (a chain's last step, a group's GroupResult, a
        chord's body). As Celery's: a task whose class overrides ``apply_async`` is sent
        through it, and under ``task_always_eager`` it runs here (:meth:`apply`)."""
        if options or self["options"] or self["subtask_type"] is not None:
            check_options(self, options)
        app = self.app
        eager = app.send_settings.always_eager
        if self["subtask_type"] in ONE_TASK:
            task = app.tasks.get(self["task"])  # not registered here: sent by name, as Celery's
            if task is not None and (eager or _sends_its_own_way(task)):
                args, kwargs = _arguments(self, tuple(args or ()), kwargs)
                return task.apply_async(args, kwargs, **send_options(
                    {**self["options"], **options}, strict=True))
        elif eager:
            return self.apply(args, kwargs, **options)
        sig = Signature.from_dict(self, app=self._app)
        result = sig.freeze(options.pop("task_id", None))
        apply(sig.app, sig, tuple(args or ()), kwargs, strict=True, **options)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run it here and now, in this thread, as Celery's ``Signature.apply`` (what
        ``task_always_eager`` does): an EagerResult (a group's GroupResult of them, a chain's
        last step, a chord's body)."""
        args, kwargs = _arguments(self, tuple(args or ()), kwargs)
        own = {**self["options"], **{k: v for k, v in options.items() if v is not None}}
        return self.app.get_task(self["task"]).apply(args, kwargs, **own)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]  # a chain, not a merge
        if not isinstance(other, Mapping):
            return NotImplemented
        return chain(self, other, app=self._app)

    def __repr__(self) -> str:
        mark = "si" if self.immutable else "s"
        return f"{self.name}.{mark}{tuple(self.args)!r}"


class chain(Signature):  # noqa: N801 - Celery's name
    """Steps run one after the other, each getting the previous result (``a | b | c``). A group
    followed by a step becomes a chord, as Celery's client makes it."""

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], (list, tuple)):
            tasks = tuple(tasks[0])
        steps: list[Signature] = []
        for task in tasks:
            step = Signature.from_dict(task, app)
            if step["subtask_type"] == "chain":
                steps.extend(_unchained(step, app))
            elif steps and steps[-1]["subtask_type"] == "group":
                steps[-1] = chord(steps[-1], step, app=app)
            else:
                steps.append(step)
        first = steps[0] if steps else None
        super().__init__("celery.chain", (), {"tasks": steps}, options, "chain", False,
                         app or (first._app if first is not None else None))

    @property
    def tasks(self) -> list[Signature]:
        tasks: list[Signature] = self["kwargs"]["tasks"]
        return tasks

    def apply(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Each step here and now, each given the previous result (the first ``args`` and
        ``kwargs``), as Celery's ``chain.apply``; the last step's result, with its parents."""
        last = None
        own = {**self["options"], **options}
        link = own.pop("link", None)  # the last step's, once; link_error goes to each step
        steps = [Signature.from_dict(step, self._app) for step in self.tasks]
        if link and steps:
            end = steps[-1]
            if end["subtask_type"] == "chord":  # chord.apply runs its body with its options
                body = Signature.from_dict(end["kwargs"]["body"], self._app)
                _add_links([body], {"link": link})
                end = steps[-1] = chord(end["kwargs"]["header"], body, app=self._app)
            else:
                _add_links([end], {"link": link})
        for step in steps:
            result = step.apply((last.get(),) if last is not None else args,
                                None if last is not None else kwargs, **own)
            result.parent, last = last, result
        return last

    def freeze(self, task_id: str | None = None, **options: Any) -> Any:
        parent = None
        # a root given goes to every step, as Celery's prepare_steps freezes them; else none
        # (the first message gets the running task's root or its own id when it is sent,
        # each later step the root of the task before it, from the worker)
        root_id = self["options"].get("root_id")
        for index, step in enumerate(self.tasks):
            if root_id:
                step["options"]["root_id"] = root_id
            result = step.freeze(task_id if index == len(self.tasks) - 1 else None)
            result.parent = parent
            parent = result
        return parent

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]  # a chain, not a merge
        if not isinstance(other, Mapping):
            return NotImplemented
        return chain(self, other, app=self._app)  # unchained with its links, as in __init__


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel; ``apply_async`` returns a GroupResult. A member signature is
    kept as it is, as Celery's group keeps it (a change made to it later is sent): freezing
    and sending work on copies, or leave it unchanged."""

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1:  # one group: its tasks; one signature: a copy (as Celery's)
            only = tasks[0]
            if isinstance(only, Mapping) and only.get("subtask_type") == "group":
                tasks = tuple(_tasks_of(signature_of(only)))
            elif isinstance(only, Mapping):
                tasks = (Signature.from_dict(only, app or getattr(only, "_app", None)),)
            else:
                tasks = tuple(only)
        sigs = [t if isinstance(t, Signature) else Signature.from_dict(t, app) for t in tasks]
        super().__init__("celery.group", (), {"tasks": sigs}, options, "group", False,
                         app or (sigs[0]._app if sigs else None))

    @property
    def tasks(self) -> list[Signature]:
        tasks: list[Signature] = self["kwargs"]["tasks"]
        return tasks

    def freeze(self, task_id: str | None = None, **options: Any) -> Any:
        self["options"].update(options)
        group_id = self["options"]["task_id"] = task_id or self.id or new_id()
        root_id = self["options"].get("root_id")
        # Celery's group freezes copies in place of its members: the caller's stay unfrozen
        tasks = self.tasks
        tasks[:] = [Signature.from_dict(task, self._app) for task in tasks]
        results = []
        for index, task in enumerate(tasks):
            if root_id:
                task["options"]["root_id"] = root_id
            results.append(task.freeze(None, group_id=group_id, group_index=index))
        return GroupResult(group_id, results, app=self.app)

    def apply_async(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send every member. Members that are one task each (a map too) are sent as they
        are, each under the id the send gives it (its own, if frozen before), rather than
        copied and the copy frozen first: the same messages, and the caller's group stays
        unfrozen. A group with options of its own, or on a backend whose results come back
        by ``reply_to`` (which freezing adds), is frozen as a copy and sent."""
        from .plans import Lanes

        if options.get("link") is not None:
            raise TypeError("Cannot add link to group: use a chord")
        if options.get("link_error") is not None:
            raise TypeError("Cannot add link to group: do that on individual tasks")
        app = self.app
        tasks = self.tasks
        if self["options"] or kwargs or app.send_settings.backend.reply_to() \
                or app.send_settings.always_eager \
                or any(type(task) is not Signature or task["subtask_type"] not in ONE_TASK
                       for task in tasks):
            return super().apply_async(args, kwargs, **options)
        _refuse_unknown(self["task"], options)
        # asked once per send, not per member: a task's apply_async may be patched at any time
        own_way = any(_sends_its_own_way(task) for task in app.tasks.values())
        group_id = options.pop("task_id", None) or new_id()
        inherited = _inherited(options)
        sent = send_options(inherited)  # a member without options of its own sends these
        args = tuple(args or ())
        results = []
        with app.sending_batch(discard_on_error=True):  # pipelined, as app.send_many sends
            lanes = Lanes(app, eager=False)
            for index, task in enumerate(tasks):
                if not sent and not task["options"]:  # straight into its task's lane
                    lane = lanes[task["task"]]
                    if lane is not None:
                        own_args, own_kwargs = _arguments(task, args, None) if args \
                            else (task["args"], task["kwargs"])  # as _arguments gives them
                        result = lane.hold(own_args, own_kwargs, group_id, index)
                        if result is not None:
                            results.append(result)
                            continue
                own = {"group_id": group_id, "group_index": index}
                send = send_options({**task["options"], **inherited, **own}, strict=True) \
                    if task["options"] else {**sent, **own}
                results.append(send_one(app, task, args, None, send, check=True,
                                        own_way=own_way))
        return GroupResult(group_id, results, app=app)

    def apply(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Every member here and now, as Celery's ``group.apply``: a GroupResult of their
        EagerResults."""
        group_id = options.pop("task_id", None) or self.id or new_id()
        own = _inherited({**self["options"], **options})
        return GroupResult(group_id, [Signature.from_dict(task, self._app).apply(
            args, kwargs, **own) for task in self.tasks], app=self.app)


class chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) whose results, in order, go to one more task (the body)."""

    def __init__(self, header: Any, body: Any, app: App | None = None, **options: Any) -> None:
        header_sig = group(_tasks_of(signature_of(header)) if isinstance(header, Mapping)
                           else header, app=app)
        body_sig = Signature.from_dict(body, app)
        super().__init__("celery.chord", (), {"header": header_sig, "body": body_sig,
                                              "kwargs": {}}, options, "chord", False,
                         app or body_sig._app)

    def apply(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """The header here and now, then the body with its results, as Celery's
        ``chord.apply``: the body's EagerResult, its parent the header's GroupResult."""
        header, body = self["kwargs"]["header"], self["kwargs"]["body"]
        parts = header.apply(args, {**(self["kwargs"].get("kwargs") or {}), **(kwargs or {})})
        result = Signature.from_dict(body, self._app).apply((parts.get(),))
        result.parent = parts
        return result

    def freeze(self, task_id: str | None = None, **options: Any) -> Any:
        header, body = self["kwargs"]["header"], self["kwargs"]["body"]
        header_result = header.freeze()
        result = body.freeze(task_id)
        self["options"]["task_id"] = header.id  # Celery's layout: the chord's id is its group's
        result.parent = header_result
        return result


def signature(value: Any, *args: Any, app: App | None = None, **kwargs: Any) -> Signature:
    """A signature from a task name or a signature dict (Celery's ``signature``)."""
    if isinstance(value, Mapping):
        return Signature.from_dict(value, app)
    return Signature(value, args, kwargs, app=app)


def xmap(task: Signature, it: Any) -> Signature:
    """One task that calls ``task`` on each item in turn (Celery's ``task.map(it)``)."""
    return Signature.from_dict(_map_signature("celery.map", "xmap", task, it), task._app)


def xstarmap(task: Signature, it: Any) -> Signature:
    """One task that calls ``task(*item)`` for each item (Celery's ``task.starmap(it)``)."""
    return Signature.from_dict(_map_signature("celery.starmap", "xstarmap", task, it), task._app)


class chunks(Signature):  # noqa: N801 - Celery's name
    """``it`` cut in parts of ``n`` items, each part one starmap task, run as a group."""

    def __init__(self, task: Signature, it: Any, n: int, app: App | None = None,
                 **options: Any) -> None:
        super().__init__("celery.chunks", (), {"task": task, "it": list(it), "n": n}, options,
                         "chunks", True, app or task._app)

    def group(self) -> group:
        return group(_tasks_of(_chunks_group(self)), app=self._app, **self.options)

    def freeze(self, task_id: str | None = None, **options: Any) -> Any:
        raise CanvasError("freeze the chunks' group instead: chunks(...).group().freeze()")

    def apply(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        return self.group().apply(args, kwargs, **options)

    def apply_async(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """A GroupResult whose results are each part's list."""
        return self.group().apply_async(args, kwargs, **options)
