"""mmrag.sse: the one SSE reader (WHATWG framing) behind the generator client, the CLI client and the harness."""

from __future__ import annotations

import pytest

from mmrag.sse import Event, SSEDecoder, iter_events, parse_events

pytestmark = pytest.mark.unit


def test_events_are_framed_by_blank_lines_and_named_by_event_lines() -> None:
    lines = ["event: token", 'data: {"text": "a"}', "", ": a comment", "id: 7", 'data: {"b": 1}', "", "event: done"]
    assert list(iter_events(lines)) == [Event('{"text": "a"}', "token"), Event('{"b": 1}')]  # name reset per event


def test_data_lines_join_and_a_last_event_without_blank_line_is_dispatched() -> None:
    events = parse_events("data: one\r\ndata:two\r\n\r\ndata: [DONE]")
    assert [e.data for e in events] == ["one\ntwo", "[DONE]"]
    assert not events[0].done and events[1].done


def test_decoder_feeds_line_by_line() -> None:
    dec = SSEDecoder()
    assert dec.feed('data: {"x": [1]}\n') is None
    event = dec.feed("\n")
    assert event is not None and event.json() == {"x": [1]} and event.event is None
    assert dec.feed("\n") is None and dec.finish() is None  # blank lines alone dispatch nothing


def test_an_engine_packet_parses_to_its_json_events() -> None:
    packet = 'data: {"choices": []}\n\ndata: {"usage": {"total_tokens": 3}}\n\ndata: [DONE]\n\n'
    events = parse_events(packet)
    assert [e.json() for e in events[:2]] == [{"choices": []}, {"usage": {"total_tokens": 3}}]
    assert events[2].done
