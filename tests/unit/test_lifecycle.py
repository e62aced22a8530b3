import pytest

from airlock.core.lifecycle import TERMINAL, IllegalTransition, State, check_transition, is_legal, replay


def test_happy_path_is_legal() -> None:
    path = [State.RECEIVED, State.ACCEPTED, State.REDACTED, State.COMPLETED, State.DELIVERED]
    assert replay(path) == (True, None)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (None, State.ACCEPTED),
        (State.RECEIVED, State.REDACTED),
        (State.DELIVERED, State.RECEIVED),
        (State.REJECTED, State.ACCEPTED),
        (State.REDACTED, State.DELIVERED),
    ],
)
def test_illegal_edges_are_refused(source: State | None, target: State) -> None:
    assert not is_legal(source, target)
    with pytest.raises(IllegalTransition):
        check_transition(source, target)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert not any(is_legal(state, target) for target in State)


def test_replay_reports_the_first_illegal_step() -> None:
    ok, reason = replay([State.RECEIVED, State.ACCEPTED, State.COMPLETED])
    assert not ok
    assert reason == "illegal transition ACCEPTED → COMPLETED"
