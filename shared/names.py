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

    def inbox(self, session_id: str, kind: str) -> str:
        """Stream of a session's items (frames, audio chunks) waiting for its next turn."""
        return f"{self.prefix}:session:{session_id}:inbox:{kind}"

    def posted(self, session_id: str, kind: str) -> str:
        """Counter numbering a session's items, so skipped frames can be counted."""
        return f"{self.prefix}:session:{session_id}:posted:{kind}"

    def turn_flag(self, session_id: str, kind: str) -> str:
        """Set while a turn of this session is on the task stream: at most one at a time."""
        return f"{self.prefix}:session:{session_id}:turn:{kind}"

    def state(self, session_id: str, kind: str) -> str:
        """Hash: the inbox cursor, the last item number taken, and the handler's state blob."""
        return f"{self.prefix}:session:{session_id}:state:{kind}"

    def gallery(self) -> str:
        """Hash: enrolled name -> JSON list of face encodings."""
        return f"{self.prefix}:gallery"

    def gallery_version(self) -> str:
        """Counter bumped on every gallery change; vision workers reload when it moves."""
        return f"{self.prefix}:gallery:version"

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


def consumer_name(host: str, pid: int, suffix: str) -> str:
    """A worker's name in its consumer group and heartbeats: ``<host>-<pid>-<suffix>``."""
    return f"{host}-{pid}-{suffix}"


def consumer_host(consumer: str) -> str:
    """The host part of :func:`consumer_name` (a container's hostname: one replica)."""
    return consumer.rsplit("-", 2)[0]
