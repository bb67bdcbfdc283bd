"""qtui's embedded broker: a kombu virtual transport that keeps queues, bindings and messages in
one SQLite file, shared by every process on the machine that opens the same path.

The package: :mod:`.schema` (tables, indexes, migrations), :mod:`.liveness` (process identity
and whether a holder still runs), :mod:`.database` (the SQL layer), :mod:`.transport` (the
kombu classes), :mod:`.queues` (queue inspection), :mod:`.delayed` (the delayed store) and
:mod:`.family` (what the rest of qtui asks of this broker, :mod:`qtui.core.brokers.family`).
This ``__init__`` imports none of them, so a process on another broker loads no SQL layer.

URLs (``kombu.Connection(url)``; kombu hands this transport the raw URL, see ``can_parse_url``):

- ``sqlite:///tmp/broker.db`` and ``sqlite:////tmp/broker.db`` both mean ``/tmp/broker.db``: any
  run of slashes after ``sqlite://`` starts an absolute path (so the SQLAlchemy spelling works too);
- ``sqlite://broker.db`` and ``sqlite://data/broker.db`` are relative to the working directory;
- ``sqlite://~/broker.db`` expands ``~``; plain ``sqlite://`` is qtui's default file
  (:func:`qtui.core.brokers.default_broker_path`). The whole rest of the URL is the path (no
  query string), the rule :mod:`qtui.core.backends.sqlite` also follows
  (:func:`qtui.core.files.sqlite_file`).

Delivery is at-least-once: a fetched message stays in the file, invisible and marked with its
holder (a per-process token), until it is acked. It becomes visible again, flagged
``redelivered``, when it is rejected with requeue, restored (channel close, ``basic_recover``),
when the visibility timeout passes (transport option ``visibility_timeout``, default 3600 s), or
when its holder is found dead (same host and pid namespace: ``os.kill(pid, 0)`` plus the process
start time from ``/proc``, so a reused pid or an unreaped zombie does not pass for the holder).
Messages held on another host come back by the visibility timeout only.

Exchanges and bindings live in the file too, so a fanout reaches every bound queue of every
process. Auto-delete and ``x-expires`` queues belong to the process that declared them last and
are dropped, with their bindings and messages, when it is found dead; an auto-delete queue also
goes when its owner cancels its last consumer. Not enforced: ``x-expires`` while the owner lives,
and ``x-message-ttl``.

Priorities follow kombu's Redis transport, which is what Celery users of a virtual transport know:
0 is served first and 9 last (the opposite of AMQP), values are clamped to 0-9, unset means 0.
Unlike Redis, which folds priorities into the buckets 0/3/6/9, every value is its own level.
Within a level, messages go out in the order they became visible (a message given back keeps
its place; a delayed one takes its place when it is due); a fetch reads only ready rows, however
many delayed or held ones its queue has (index ``messages_ready``, schema version 2).

Delayed delivery: a message published with the header ``x-qtui-not-before`` (epoch seconds)
stays invisible until then; the worker stores far-off ETA tasks this way instead of holding them
past the visibility timeout.

Transport options: ``visibility_timeout`` (s, 3600; the claiming consumer's value counts),
``polling_interval`` and ``idle_polling_interval`` (s, 0.005 and 0.03: the sleep between empty
polls while messages flow, and after a second without any; an empty poll costs one
``PRAGMA data_version``), ``busy_timeout`` (s, 5: SQLite's wait for the write lock, after which
the operation is retried with backoff and a warning, five attempts in all; then
:class:`.database.BrokerLocked`, a connection error: qtui's worker reconnects and keeps what it
holds, it does not give back tasks still running), ``fetch_batch`` (16: rows one claim may
take ahead, within the consumer's prefetch limit; they stay invisible until acked, and go back
on cancel, requeue and close).

qtui's worker fetches through :meth:`.transport.Channel.send_fetch` instead while it is busy:
the acks of its finished tasks, the start records of the batch it is about to run (the cluster
ledger's table in this file) and the claim of what its prefetch window has room for are one
transaction.
"""
