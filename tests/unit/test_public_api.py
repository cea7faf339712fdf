"""The public surface: curated, sorted, complete, and presented as `vermilion`."""

from __future__ import annotations

import importlib.metadata
import inspect
import pkgutil

import vermilion


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted and has no duplicates."""
    assert list(vermilion.__all__) == sorted(set(vermilion.__all__))


def test_all_names_exist_and_say_they_live_in_vermilion() -> None:
    """Every exported name exists and reports __module__ == 'vermilion'."""
    for name in vermilion.__all__:
        obj = getattr(vermilion, name)
        assert getattr(obj, "__module__", "vermilion") == "vermilion", name


def test_all_is_complete() -> None:
    """Every public class or function defined in a private module is exported."""
    exported = {id(getattr(vermilion, name)) for name in vermilion.__all__}
    public_in_modules = set()
    for module_info in pkgutil.iter_modules(vermilion.__path__):
        # the CLI; public modules of their own
        if module_info.name in ("__main__", "testing", "otel", "prometheus", "dashboard"):
            continue
        module = importlib.import_module(f"vermilion.{module_info.name}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not name.startswith("_"):
                public_in_modules.add((module_info.name, name, id(obj)))
    internal = {
        # building blocks that the public objects use, not part of the API
        "Connection", "DequeueReply", "EnqueueOptions", "Leased", "OutcomeRequest", "QueueKeys",
        "StoredMessage", "Script", "EmbeddedServer", "RollingStats", "percentile", "main",
        "decode_payload", "encode_content", "logger", "format_table", "format_worker_status",
        "run_demo", "pack_command", "random_mids", "Channel", "is_tls_failure", "encode_contents",
        "DEFAULT_ENQUEUE_OPTIONS", "ScriptClient", "Transport", "Wire", "Counts", "ack_argv", "bulk",
        "mid_arg", "mid_text", "pack_messages", "parse_content", "parse_counts", "parse_dequeue",
        "reply_int", "reply_text", "queue_name_in", "queue_name_of", "scan_pattern", "translate_errors",
        "workers_index_queue_name",
        "translated", "naming_a_denied_command", "refused_as", "new_wire", "pooled_wire", "release_pooled",
        "pool_of", "connection_settings", "Acknowledger", "HandlerRunner", "HandlerTasks", "LeaseKeeper",
        "Poller", "Slots", "Tally", "as_delay_function", "error_backoff", "exception_to_failure",
        "user_delay", "describe_client", "LeaseKey",
        "ClusterChannel", "ClusterTransport", "Sender", "client_from_url", "cluster_seeds", "is_client",
        "node_client", "close_client", "Replication", "replication_for",
        "MigrationReport", "has_v1_keys", "migrate_queue", "scan_v1_queue_names", "v1_queue_names",
        "TracingHook", "carrier_text", "escape", "split_carrier", "with_carrier",
        "encode_record", "new_worker_id", "parse_record", "beat", "live_workers", "withdraw",
        "PresenceBeat", "presence_beat", "worker_key", "workers_key", "format_workers", "worker_row",
        "WorkerObserver",
        "FailureHistory", "StoredFailure", "failed_page", "purge_all", "purge_mids", "replay_all",
        "replay_mids", "non_negative_int", "decode_or_raw",
        "Cron", "load_timezone", "TickReply", "tick", "ScheduleRunner", "schedules_key",
        "Unset", "settings_changes", "settings_from_reply", "check_priority", "FlowSettings", "check_key",
        "enqueue_options", "mids_for", "result_of", "queue_client",
        "check_server", "check_version", "scan_names",
        "WorkerOptions", "worker_monitor", "observe_worker", "ScriptCaller",
        "QueueInspection", "each_shard", "ShardPoller", "ShardedCalls", "enqueue_sharded",
        "by_shard", "check_shard_count", "check_shards", "claim_shards", "shard_index", "shard_keys",
        "shard_tag", "stored_shards",
    }  # fmt: skip
    missing = {
        name for module, name, ident in public_in_modules if ident not in exported and name not in internal
    }
    assert not missing, f"public but not exported: {sorted(missing)}"


def test_the_design_names_are_exported() -> None:
    """The names DESIGN.md promises are importable from vermilion."""
    for name in [
        "AsyncWorker", "EnqueueResult", "Failure", "Message", "MessageStatus", "Queue",
        "QueueStatus", "Retry", "Success", "WorkerStatus", "queue_names", "clear_queues",
        "set_min_log_level", "VermilionError", "FailedMessage", "ReplayResult",
    ]:  # fmt: skip
        assert name in vermilion.__all__, name


def test_testing_module_is_public_and_curated() -> None:
    """vermilion.testing is a public module with a sorted __all__ of existing names."""
    import vermilion.testing as testing

    assert list(testing.__all__) == sorted(testing.__all__)
    for name in testing.__all__:
        assert callable(getattr(testing, name)), name


def test_version_comes_from_package_metadata() -> None:
    """vermilion.__version__ is the installed distribution's version."""
    assert vermilion.__version__ == importlib.metadata.version("vermilion")


def test_message_statuses_are_the_carmine_ones_plus_failed() -> None:
    """MessageStatus holds Carmine's seven statuses and vermilion's `failed`."""
    assert {s.value for s in vermilion.MessageStatus} == {
        "queued", "queued-with-backoff", "locked", "locked-with-requeue", "done-awaiting-gc",
        "done-with-backoff", "done-with-requeue", "failed",
    }  # fmt: skip
    assert vermilion.MessageStatus("queued") == "queued"


def test_type_hints_of_exported_dataclasses_resolve() -> None:
    """typing.get_type_hints works on every exported dataclass (pydantic and FastAPI rely on it)."""
    import dataclasses
    import typing

    checked = 0
    for name in vermilion.__all__:
        obj = getattr(vermilion, name)
        if dataclasses.is_dataclass(obj):
            assert typing.get_type_hints(obj), name
            checked += 1
    assert checked >= 10
