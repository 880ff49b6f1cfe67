"""Who hears a session topic (consumers/session_stream.py's Listeners): a main listener and taps beside it."""

from __future__ import annotations

from consumers.session_stream import Listener, Listeners, Record

RECORD = Record("avatar.session.s1", 7, b"x")


def make_listener(log: list[str], name: str) -> Listener:
    return lambda record: log.append(f"{name}:{record.offset}")


def test_a_tap_on_a_topic_the_main_listener_reads_needs_no_assignment_and_hears_the_same_records() -> None:
    heard: list[str] = []
    listeners = Listeners()
    assert listeners.set_main(RECORD.topic, make_listener(heard, "ws")) is False, "first: assign, no reassign"
    assert listeners.add_tap(RECORD.topic, make_listener(heard, "rtc")) is False, "already read: no assignment"
    for listener in listeners.of(RECORD.topic):
        listener(RECORD)
    assert heard == ["ws:7", "rtc:7"], "the main listener first"


def test_the_topic_stays_assigned_while_a_tap_hears_it_after_the_main_listener_left() -> None:
    listeners = Listeners()
    main, tap = make_listener([], "ws"), make_listener([], "rtc")
    listeners.set_main(RECORD.topic, main)
    listeners.add_tap(RECORD.topic, tap)
    assert listeners.drop_main(RECORD.topic) == (True, True), "had a main listener; still heard by the tap"
    assert listeners.of(RECORD.topic) == [tap]
    assert listeners.drop_tap(RECORD.topic, tap) is True, "nobody hears it now: unassign"
    assert not listeners.heard(RECORD.topic) and listeners.of(RECORD.topic) == []


def test_a_tap_alone_asks_for_an_assignment_and_a_main_listener_then_reassigns_from_its_offset() -> None:
    listeners = Listeners()
    tap = make_listener([], "rtc")
    assert listeners.add_tap(RECORD.topic, tap) is True, "nobody read it: assign (from the end)"
    assert listeners.set_main(RECORD.topic, make_listener([], "ws")) is True, "reassign where the WebSocket reads"
    assert listeners.drop_tap(RECORD.topic, tap) is False, "the WebSocket still reads it"
    assert listeners.drop_main(RECORD.topic) == (True, False)


def test_dropping_what_was_never_there_changes_nothing() -> None:
    listeners = Listeners()
    assert listeners.drop_main("other") == (False, False)
    assert listeners.drop_tap("other", make_listener([], "rtc")) is True
