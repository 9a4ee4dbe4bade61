"""Every Redis name the service uses: streams, groups, keys. No Redis literal lives anywhere else."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisNames:
    """Names under one key prefix (tests use a prefix of their own)."""

    prefix: str

    def tasks(self, kind: str) -> str:
        """Task stream of one modality; its consumer group is :meth:`group`."""
        return f"{self.prefix}:tasks:{kind}"

    def group(self, kind: str) -> str:
        return f"{kind}-workers"

    def dead_letters(self, kind: str) -> str:
        """Entries that failed ``max_deliveries`` times, with their error."""
        return f"{self.prefix}:dead:{kind}"

    def session_results(self, session_id: str) -> str:
        """Result stream of one session: the relay follows it, a reconnect replays it."""
        return f"{self.prefix}:session:{session_id}:results"

    def session_seq(self, session_id: str) -> str:
        """Counter behind a session's ``seq``."""
        return f"{self.prefix}:session:{session_id}:seq"

    def text_feed(self) -> str:
        """Every text-emotion result, for server-sent events."""
        return f"{self.prefix}:feed:text"

    def workers_alive(self, kind: str) -> str:
        """Sorted set: worker id -> time of its last heartbeat."""
        return f"{self.prefix}:workers:{kind}"

    def wake(self, gateway_id: str) -> str:
        """A gateway's private stream that wakes its relay when it starts following a new stream."""
        return f"{self.prefix}:gateway:{gateway_id}:wake"

    def pattern(self) -> str:
        """Glob matching every key under this prefix (for clean-up in tests)."""
        return f"{self.prefix}:*"
