"""The AMQP (RabbitMQ) broker family: everything qtui knows about RabbitMQ, in one package.

- :mod:`.connection` -- connections with publisher confirms on (a batch's awaited once), and
  the broker's ``connection.blocked`` notices tracked;
- :mod:`.queues` -- queue inspection (passive declares, or the management API);
- :mod:`.pauses` -- the paused queues, kept in a stream queue;
- :mod:`.delayed` -- the delayed (ETA) store, a ladder of TTL queues dead-lettering into a due
  queue;
- :mod:`.family` -- :class:`~.family.AmqpFamily`, the answers the rest of qtui asks for
  (:mod:`qtui.core.brokers.family`).
"""

from .connection import (
    ALARM_HINT,
    AMQP_SCHEMES,
    Blocked,
    Publication,
    block_hint,
    blocked_state,
    confirms,
    is_amqp,
    publish_confirmed,
    transport_options,
    wait_unblocked,
)

__all__ = ["ALARM_HINT", "AMQP_SCHEMES", "Blocked", "Publication", "block_hint",
           "blocked_state", "confirms", "is_amqp", "publish_confirmed", "transport_options",
           "wait_unblocked"]
