"""Throw-away Redis Cluster and Sentinel deployments on free loopback ports.

Built from the fault suite's :class:`FaultServer` (Debian's redis-server, or
the embedded Valkey's binary where there is none) and wired together with
plain cluster commands (``CLUSTER MEET``, ``ADDSLOTSRANGE``, ``REPLICATE``),
which both servers have, rather than ``redis-cli --cluster create``, which a
machine with only the embedded Valkey lacks. Only processes started here are
ever signalled, by their own handle.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import redis

from tests.reliability.servers import FaultServer, binary

__all__ = ["LocalCluster", "LocalSentinels", "command", "report", "server_kind", "wait_until"]

SLOTS = 16384


def report(name: str, figures: Mapping[str, object]) -> None:
    """Print a test's measured figures (shown with ``pytest -s``; the docs quote them)."""
    sys.stderr.write(f"\n{name}: {json.dumps(figures)}\n")


def server_kind() -> str:
    """redis-server, unless the run is the embedded Valkey's (as CI's second run) or it is missing."""
    if os.environ.get("VERMILION_TEST_SERVER") == "embedded" and binary("valkey"):
        return "valkey"
    return "redis" if binary("redis") else "valkey"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port


def _sync(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)


def command(port: int, *args: object) -> Any:
    """One command to the server on ``port``, on a connection of its own."""
    client = _sync(port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


class _SentinelServer(FaultServer):
    """A FaultServer run as a Sentinel, from a config file it may rewrite."""

    def _args(self) -> list[str]:
        return [self.binary, str(self.dir / "sentinel.conf"), "--sentinel"]


class _Deployment:
    """Servers started together: a failed start stops what it had started."""

    def start(self) -> None:
        # Free ports are picked before the servers bind them (a cluster's bus
        # ports too, inside the ephemeral range): a port taken in between
        # fails the start, which is then made once more on fresh ports.
        for attempt in (1, 2):
            try:
                self._start()
                return
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class LocalCluster(_Deployment):
    """``masters`` masters with ``replicas`` replicas each, slots split evenly."""

    def __init__(self, masters: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000) -> None:
        self.kind = server_kind()
        self.servers: list[FaultServer] = []
        self._masters = masters
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms

    def _new_server(self) -> FaultServer:
        server = FaultServer(
            self.kind,
            config={
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(self._node_timeout_ms),
            },
        )
        server.port = _cluster_port()
        server.config["port"] = str(server.port)
        return server

    def _start(self) -> None:
        self.servers = [self._new_server() for _ in range(self._masters * (1 + self._replicas))]
        for server in self.servers:
            server.start()
        for server in self.servers[1:]:
            command(self.servers[0].port, "CLUSTER", "MEET", "127.0.0.1", server.port)
        masters = self.servers[: self._masters]
        for index, server in enumerate(masters):
            low = index * SLOTS // self._masters
            high = (index + 1) * SLOTS // self._masters - 1
            command(server.port, "CLUSTER", "ADDSLOTSRANGE", low, high)
        total = len(self.servers)
        wait_until(lambda: all(self._known(s.port) == total for s in self.servers), 20, "every node to meet")
        for index, server in enumerate(self.servers[self._masters :]):
            master = masters[index % self._masters]
            master_id = command(master.port, "CLUSTER", "MYID").decode()
            wait_until(partial(self._replicate, server.port, master_id), 20, "a replica to attach")
        wait_until(self.healthy, 30, "the cluster to be ok")

    @staticmethod
    def _known(port: int) -> int:
        try:
            return len(command(port, "CLUSTER", "NODES").decode().strip().splitlines())
        except redis.RedisError:
            return 0

    @staticmethod
    def _replicate(port: int, master_id: str) -> bool:
        try:
            command(port, "CLUSTER", "REPLICATE", master_id)
        except redis.ResponseError:  # the master is not known to this node yet
            return False
        return True

    def healthy(self) -> bool:
        """Every running node says ok and every replica is in sync with its master."""
        for server in self.servers:
            if server.process is None:
                continue
            try:
                if "cluster_state:ok" not in command(server.port, "CLUSTER", "INFO").decode():
                    return False
                # Every node knows every master's replicas (the client's seeds after a failover).
                ranges = command(server.port, "CLUSTER", "SLOTS")
                if any(len(entry) - 3 < self._replicas for entry in ranges):
                    return False
                replication = _sync(server.port).info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
        return True

    def slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) of every range, from a running node."""
        for server in self.servers:
            if server.process is None:
                continue
            try:
                reply = command(server.port, "CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in reply)
        raise RuntimeError("no cluster node answers")

    def master_of(self, slot: int) -> int:
        for low, high, port in self.slots():
            if low <= slot <= high:
                return port
        raise LookupError(f"slot {slot} is not served")

    def master_ports(self) -> list[int]:
        return sorted({port for _, _, port in self.slots()})

    def server(self, port: int) -> FaultServer:
        return next(s for s in self.servers if s.port == port)

    def move_slot(self, slot: int, target: int, *, pause: float = 0.0) -> int:
        """Reshard ``slot`` to the master on ``target`` as redis-cli does, one key per
        ``MIGRATE`` with ``pause`` seconds between steps; returns how many keys moved."""
        source = self.master_of(slot)
        source_id = command(source, "CLUSTER", "MYID").decode()
        target_id = command(target, "CLUSTER", "MYID").decode()
        command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := command(source, "CLUSTER", "GETKEYSINSLOT", slot, 1):
            command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        time.sleep(pause)
        for port in [target, source, *self.master_ports()]:
            command(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_until(lambda: self.master_of(slot) == target, 10, "every node to agree on the move")
        return moved

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[: self._masters])

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class LocalSentinels(_Deployment):
    """One master, ``replicas`` replicas and ``sentinels`` sentinels watching ``service``."""

    def __init__(self, service: str = "vermilion", replicas: int = 2, sentinels: int = 3) -> None:
        self.kind = server_kind()
        self.service = service
        self._counts = (replicas, sentinels)
        self._new_servers()

    def _new_servers(self) -> None:
        replicas, sentinels = self._counts
        self.master = FaultServer(self.kind)
        self.replicas = [FaultServer(self.kind) for _ in range(replicas)]
        self.sentinels: list[FaultServer] = [_SentinelServer(self.kind) for _ in range(sentinels)]

    def _start(self) -> None:
        if self.master.process is None and not self.master.dir.exists():  # a second attempt
            self._new_servers()
        self.master.start()
        for replica in self.replicas:
            replica.config["replicaof"] = f"127.0.0.1 {self.master.port}"
            replica.start()
        quorum = len(self.sentinels) // 2 + 1
        for sentinel in self.sentinels:
            conf = sentinel.dir / "sentinel.conf"
            conf.write_text(
                f"port {sentinel.port}\nbind 127.0.0.1\ndir {sentinel.dir}\nlogfile server.log\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 3000\n"
                f"sentinel parallel-syncs {self.service} 2\n"
            )
            sentinel.start()
        wait_until(self._replicas_synced, 30, "the replicas to sync")
        wait_until(self._sentinels_ready, 30, "the sentinels to see each other")

    def _replicas_synced(self) -> bool:
        try:
            info = _sync(self.master.port).info("replication")
        except redis.RedisError:
            return False
        return int(info.get("connected_slaves", 0)) == len(self.replicas)

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = command(sentinel.port, "SENTINEL", "MASTER", self.service)
            except redis.RedisError:
                return False
            # A flat list of pairs; newer redis-py makes a dict of it (bytes keys and values).
            if isinstance(state, list):
                state = dict(zip(state[::2], state[1::2], strict=True))
            if int(state[b"num-other-sentinels"]) < len(self.sentinels) - 1:
                return False
            if int(state[b"num-slaves"]) < len(self.replicas):
                return False
        return True

    def settled(self) -> bool:
        """The current master has every running replica attached and in sync (as after a
        failover, once the Sentinels have reconfigured the replicas)."""
        try:
            master = self.master_port()
            info = _sync(master).info("replication")
        except (redis.RedisError, RuntimeError):
            return False
        running = [s for s in [self.master, *self.replicas] if s.process is not None and s.port != master]
        links = [_sync(s.port).info("replication").get("master_link_status") for s in running]
        return int(info.get("connected_slaves", 0)) == len(running) and all(link == "up" for link in links)

    def planned_failover(self) -> None:
        """``SENTINEL FAILOVER``, once no failover is in progress any more (``INPROG``)."""

        def accepted() -> bool:
            try:
                command(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service)
            except redis.ResponseError as exc:
                if "INPROG" not in str(exc):
                    raise
                return False
            return True

        wait_until(accepted, 30, "the Sentinels to accept a failover")

    def master_port(self) -> int:
        for sentinel in self.sentinels:
            try:
                _, port = command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except redis.RedisError:
                continue
            return int(port)
        raise RuntimeError("no sentinel answers")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def server(self, port: int) -> FaultServer:
        return next(s for s in [self.master, *self.replicas] if s.port == port)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.stop()
