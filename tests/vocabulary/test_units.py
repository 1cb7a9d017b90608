"""Fast tests that need no database: Event, channel and payload checks."""

from __future__ import annotations

import pickle

import pytest

from django_pgpubsub import (
    ConnectionLost,
    Event,
    InvalidChannel,
    InvalidPayload,
    PayloadTooLarge,
    PubSubError,
)
from django_pgpubsub.vocabulary.channel_names import validate_channel
from django_pgpubsub.vocabulary.payload import encode_payload


def test_event_data_is_json_or_the_raw_string() -> None:
    assert Event("c", '{"a": 1}', 1).data == {"a": 1}
    assert Event("c", "not json", 1).data == "not json"
    assert Event("c", "", 1).data == ""
    assert Event("c", "42", 1).data == 42


def test_event_data_is_decoded_once() -> None:
    event = Event("c", '{"a": [1]}', 1)
    assert event.data is event.data


def test_event_is_immutable_small_and_comparable() -> None:
    event = Event("c", "p", 7)
    with pytest.raises(AttributeError):
        event.channel = "other"
    with pytest.raises(AttributeError):
        del event.payload
    assert not hasattr(event, "__dict__")
    assert event == Event("c", "p", 7)
    assert event != Event("c", "p", 8)
    assert len({event, Event("c", "p", 7)}) == 1
    assert pickle.loads(pickle.dumps(event)) == event
    assert repr(event) == "Event(pid=7, channel='c', payload='p')"


def test_validate_channel_boundaries() -> None:
    assert validate_channel("x" * 63) == "x" * 63
    with pytest.raises(InvalidChannel, match="64 bytes"):
        validate_channel("x" * 64)
    with pytest.raises(InvalidChannel, match="not bytes"):
        validate_channel(b"x")


def test_encode_payload_boundaries() -> None:
    assert encode_payload("x" * 7999) == "x" * 7999
    with pytest.raises(PayloadTooLarge):
        encode_payload("x" * 8000)
    with pytest.raises(PayloadTooLarge):
        encode_payload({"k": "x" * 8000})
    assert encode_payload({"b": None, "a": 1}) == '{"b":null,"a":1}'


def test_every_exception_derives_from_pubsub_error() -> None:
    """As "Errors and checks" lists them."""
    for error in (InvalidChannel, InvalidPayload):
        assert issubclass(error, PubSubError)
        assert issubclass(error, ValueError)
    assert issubclass(PayloadTooLarge, InvalidPayload)
    assert issubclass(ConnectionLost, PubSubError)
    with pytest.raises(InvalidPayload):  # a too large payload is caught as an invalid one
        encode_payload("x" * 8000)
