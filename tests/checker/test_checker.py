"""The bounded explicit-state checker (explorer.py) against the real scripts.

CI bound: W=2 workers, M=3 mids, depth D=8. To stay within a few minutes on a
2-core box the operation set is reduced: the enqueue variants (can_update,
can_requeue, delayed) are offered for the first mid only (the other two get the
plain enqueue, and are interchangeable: symmetry-reduced), and extend is left
out. Every ack outcome ('s', 's500', 'r', 'r100', 'f'), stale acks, crashes,
clock ticks and jumps to the next event are kept. `nox -s checker` runs a larger
bound.

The unmutated scripts break one documented invariant (KNOWN_VIOLATIONS): it is
relaxed for the CI run, and pinned by an xfail(strict) test.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from vermilion._scripts import SCRIPTS

from .explorer import KNOWN_VIOLATIONS, Explorer, Violation

ALLOW = frozenset(KNOWN_VIOLATIONS)


def _explorer(depth: int, **kw: Any) -> Explorer:
    return Explorer(
        2, 3, depth, queue=f"checker-{uuid.uuid4().hex[:12]}", enqueue_variants_for=1, with_extend=False, **kw
    )


@pytest.mark.timeout(600)
def test_ci_bound_holds() -> None:
    explorer = _explorer(8, allow=ALLOW)
    try:
        stats = explorer.explore()
    finally:
        explorer.cleanup()
    print(f"\nW=2 M=3 D=8: {stats}")
    assert stats.depth_reached == 8
    assert stats.states > 50_000


@pytest.mark.xfail(strict=True, raises=Violation, reason=KNOWN_VIOLATIONS["requeue-while-queued"])
def test_requeue_invariant_as_documented() -> None:
    explorer = _explorer(4)
    try:
        explorer.explore()
    finally:
        explorer.cleanup()


def _mutated(name: str, old: str, new: str) -> dict[str, bytes | str]:
    source = SCRIPTS[name].source.decode()
    assert old in source, f"mutation target {old!r} not in {name}.lua"
    return {name: source.replace(old, new)}


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("ack", "token == o_token[i]", "true"),
        ("dequeue", "if is_suspect and suspects_taken >= max_suspects then", "if false then"),
    ],
    ids=["ack-fence", "dequeue-suspects"],
)
def test_mutation_is_caught(name: str, old: str, new: str) -> None:
    explorer = _explorer(8, allow=ALLOW, sources=_mutated(name, old, new))
    try:
        with pytest.raises(Violation) as caught:
            explorer.explore()
    finally:
        explorer.cleanup()
    print(f"\ncounter-example for the {name} mutation:\n{caught.value}")
