"""The delayed (ETA) store on Redis: the sorted set ``qtui.delayed.<queue>`` scored by due
time; each member is the list the message goes back to, a newline, and the complete kombu
envelope (see :mod:`qtui.core.delayed`)."""

from __future__ import annotations

import json

from ...delayed import DELAYED_KEY, DelayedTasks, HeldTask, held_task

#: Move every member of a delayed set (KEYS[1]) to the tail of its list, as a new publish would.
_RELEASE = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, member in ipairs(members) do
  local sep = string.find(member, '\\n', 1, true)
  redis.call('LPUSH', string.sub(member, 1, sep - 1), string.sub(member, sep + 1))
end
redis.call('DEL', KEYS[1])
return #members
"""


class RedisDelayed(DelayedTasks):
    """Redis: one sorted set per queue."""

    def count(self, queue: str) -> int:
        return int(self.channel.client.zcard(DELAYED_KEY.format(queue=queue)))

    def purge(self, queue: str) -> int:
        key = DELAYED_KEY.format(queue=queue)
        with self.channel.client.pipeline(transaction=True) as pipe:
            count, _ = pipe.zcard(key).delete(key).execute()
        return int(count)

    def release(self, queue: str) -> int:
        client = self.channel.client
        return int(client.register_script(_RELEASE)(keys=[DELAYED_KEY.format(queue=queue)]))

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        client = self.channel.client
        members = client.zrange(DELAYED_KEY.format(queue=queue), 0, limit - 1)
        found = []
        for member in members:
            text = member.decode() if isinstance(member, bytes) else member
            try:
                envelope = json.loads(text.partition("\n")[2])
            except ValueError:  # not qtui's layout: shown without details
                envelope = {}
            found.append(held_task(envelope.get("headers") or {},
                               (envelope.get("properties") or {}).get("priority")))
        return found
