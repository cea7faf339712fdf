"""The help texts of the commands that read or feed queues.

Kept apart from :mod:`._parser`, which builds the options, because they are
prose: one line for ``vermilion --help`` and a paragraph for the command's own
``--help``.
"""

from __future__ import annotations

__all__ = ["ABOUT"]

ABOUT = {
    "status": (
        "counts and lag of every queue, or of the named ones",
        "Counts and lag of the named queues, or of every queue with data in Redis."
        " lag is how long (s) the oldest ready message has waited.",
    ),
    "queues": (
        "names of the queues that have data in Redis",
        "Names of the queues that have data in Redis, sorted, one a line.",
    ),
    "workers": (
        "the live workers of a queue",
        "The workers of QUEUE that announced themselves in Redis and have not lapsed: id, host, pid,"
        " concurrency, messages in flight, outcomes so far, handling time, when they started and when"
        " they last announced themselves. A crashed worker is listed until its record lapses.",
    ),
    "enqueue": (
        "add one message, given as JSON",
        "Add one message. Prints 'added MID' or 'updated MID' (exit code 0), or"
        " 'refused MID: REASON' when the mid is busy (exit code 3).",
    ),
    "message-status": (
        "the status of one message",
        "The status of one message (queued, locked, done-with-backoff, failed, ...), or"
        " 'unknown' for a mid the queue does not know. Exit code 0 either way.",
    ),
    "clear": (
        "delete every message and all state of the named queues",
        "Delete every message and all state of the named queues (exact names, never"
        " patterns). Refuses without --yes.",
    ),
    "configure": (
        "show or change a queue's flow-control settings (size bound, rate limit, per-key limit)",
        "Show the queue's settings, or change those given: --max-size N refuses enqueues once N"
        " messages are live (ready, delayed or leased); --rate-limit N hands out at most N messages"
        " per --rate-interval seconds (1 by default) across all workers; --max-per-key N leases at"
        " most N messages of one key at once; --no-max-size, --no-rate-limit and --no-max-per-key"
        " remove them.",
    ),
    "migrate": (
        "upgrade queues written by protocol version 1 (an older vermilion) in place",
        "Move the data of the named queues, or with --all of every queue that holds"
        " version-1 keys, to protocol version 2, keeping every message's state. Safe to"
        " repeat and to interrupt; stop version-1 workers first.",
    ),
    "failed": (
        "the failure history of a queue: failed messages with their reasons and payloads",
        "A page of the queue's failed messages, newest first: when each failed, its mid,"
        " attempts, reason and content (cut to one line; --json gives them whole).",
    ),
    "replay": (
        "put failed messages back in their queue",
        "Put the named failed messages (or with --all every one) back in the queue, ready,"
        " each as a new life (attempt 1). Prints 'replayed MID' or 'not replayed MID: REASON'"
        " (live: the mid lives again; unknown: not in the history; no-content: a failure"
        " migrated from protocol version 1); exit code 3 if any was not replayed.",
    ),
    "purge-failed": (
        "remove failed messages from the failure history",
        "Remove the named failed messages (or with --all every one) from the queue's failure"
        " history; the queue forgets their mids. Prints how many were removed.",
    ),
}
"""Each such command's one-line help (in ``vermilion --help``) and its description."""
