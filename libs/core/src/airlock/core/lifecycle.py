"""The request lifecycle: states and the transitions allowed between them.

Every stage records each transition it makes as an audit event; the auditor and
`airlock audit replay` use this module to decide whether a recorded history is legal.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A request's position in the pipeline."""

    RECEIVED = "RECEIVED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    REDACTED = "REDACTED"
    BLOCKED = "BLOCKED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DELIVERED = "DELIVERED"


#: ``None`` stands for "not yet seen": the only way in is RECEIVED.
TRANSITIONS: dict[State | None, frozenset[State]] = {
    None: frozenset({State.RECEIVED}),
    State.RECEIVED: frozenset({State.ACCEPTED, State.REJECTED}),
    # FAILED from ACCEPTED: the PII detector kept failing, so the prompt was never sent.
    State.ACCEPTED: frozenset({State.REDACTED, State.BLOCKED, State.FAILED}),
    State.REDACTED: frozenset({State.COMPLETED, State.FAILED}),
    # A completion can still fail on the way back (the placeholder map cannot be
    # decrypted, or the output policy blocks the answer): the caller then gets an error.
    State.COMPLETED: frozenset({State.DELIVERED, State.FAILED}),
}

TERMINAL: frozenset[State] = frozenset({State.REJECTED, State.BLOCKED, State.FAILED, State.DELIVERED})


class IllegalTransition(ValueError):
    """Raised when code tries to move a request along an edge the lifecycle forbids."""


def is_legal(source: State | None, target: State) -> bool:
    """Tell whether ``source → target`` is an edge of the lifecycle.

    Args:
        source: The current state, or ``None`` for a request not yet seen.
        target: The state to move to.

    Returns:
        True when the transition is allowed.
    """
    return target in TRANSITIONS.get(source, frozenset())


def check_transition(source: State | None, target: State) -> None:
    """Raise :class:`IllegalTransition` unless ``source → target`` is allowed."""
    if not is_legal(source, target):
        raise IllegalTransition(f"illegal transition {source} → {target}")


def replay(states: list[State]) -> tuple[bool, str | None]:
    """Walk a recorded sequence of states from the start.

    Args:
        states: The ``to_state`` of each recorded transition, in order.

    Returns:
        ``(True, None)`` when every step is legal, else ``(False, reason)``.
    """
    current: State | None = None
    for state in states:
        if not is_legal(current, state):
            return False, f"illegal transition {current} → {state}"
        current = state
    return True, None
