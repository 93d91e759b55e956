"""What the broker holds, for the reconciler: the task ids of messages waiting in a queue, and of those a
worker took and has not acknowledged yet (with acks_late, every running job's message).

Read straight from Redis rather than asked of the workers (``inspect().active()``): a solo worker busy with
a PoC does not answer control messages until the PoC ends, and a dead one never does. Redis only (the
transport of deployments and tests); for any other transport the answer is None, "cannot tell", and the
reconciler then leaves queued requests alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HeldMessages:
    waiting: frozenset[str] = frozenset()
    # task id -> when a worker took the message (Unix time); it stays here until the worker acknowledges
    # it, or until the visibility timeout puts it back in its queue if that worker died.
    delivered: dict[str, float] = field(default_factory=dict)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.waiting or task_id in self.delivered


def held_messages(app: Any, queues: Iterable[str]) -> HeldMessages | None:
    """One consistent snapshot (a MULTI/EXEC) of the messages in ``queues`` and of the unacknowledged ones."""
    with app.connection_for_read() as connection:
        if connection.transport.driver_type != "redis":
            return None
        channel = connection.default_channel
        # kombu prefixes some commands itself (ZRANGE) and not others (LRANGE, HGETALL).
        prefix = channel.global_keyprefix
        lists = sorted({channel._q_for_pri(q, pri) for q in queues for pri in channel.priority_steps})
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=True)
            for name in lists:
                pipe.lrange(prefix + name, 0, -1)
            pipe.hgetall(prefix + channel.unacked_key)
            pipe.zrange(channel.unacked_index_key, 0, -1, withscores=True)
            *queued, unacked, index = pipe.execute()
    waiting = {_task_id(json.loads(raw)) for messages in queued for raw in messages}
    taken_at = {_text(tag): score for tag, score in index}
    delivered = {}
    for tag, raw in unacked.items():
        message, _exchange, _routing_key = json.loads(raw)
        delivered[_task_id(message)] = taken_at.get(_text(tag), 0.0)
    return HeldMessages(frozenset(waiting - {""}), {k: v for k, v in delivered.items() if k})


def _task_id(message: dict[str, Any]) -> str:
    # Celery's message protocol 2 carries the task id in the headers (protocol 1 in the body, unused here).
    return str((message.get("headers") or {}).get("id") or "")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
