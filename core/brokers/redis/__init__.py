"""The Redis broker family: everything qtui knows about a Redis broker, in one package.

- :mod:`.urls` -- which URLs reach Redis, and a URL as redis-py takes it;
- :mod:`.channel` -- kombu's Redis transport with less work per message: what every qtui
  connection to Redis uses (``redis://``, ``rediss://``, ``redis+socket://``);
- :mod:`.worker_channel` -- the worker's channel on top of it: every message owned from the
  moment it leaves its queue (one fetch script), and given back only when its owner is dead;
- :mod:`.queues` -- queue inspection (LLEN over the priority lists, queues found in kombu's
  binding sets);
- :mod:`.delayed` -- the delayed (ETA) store, a sorted set per queue;
- :mod:`.ledger` -- the cluster ledger (:mod:`qtui.core.ledger`) kept in Redis;
- :mod:`.family` -- :class:`~.family.RedisFamily`, the answers the rest of qtui asks for
  (:mod:`qtui.core.brokers.family`).

Importing the package imports none of them, so that a process on another broker that asks
whether a URL is Redis's (:mod:`.urls`) does not load redis-py.
"""
