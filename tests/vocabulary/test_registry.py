"""@handler, the Registry, and autodiscovery of handler modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_pgpubsub import Event, InvalidChannel, handler, registry
from django_pgpubsub.apps import autodiscover
from tests.testapp import pubsub as testapp_handlers


@pytest.fixture
def empty_registry() -> Iterator[None]:
    with registry.isolated():
        yield


def test_autodiscovered_at_startup() -> None:
    assert registry.handlers("test.b") == (
        testapp_handlers.recorder,
        testapp_handlers.second_for_b,
    )


@pytest.mark.usefixtures("empty_registry")
def test_handler_returns_the_function_unchanged() -> None:
    def on_event(event: Event) -> str:
        return event.payload

    assert handler("a", "b")(on_event) is on_event
    assert registry.handlers("a") == registry.handlers("b") == (on_event,)
    assert on_event(Event("a", "p", 1)) == "p"


@pytest.mark.usefixtures("empty_registry")
def test_several_handlers_run_in_registration_order_and_twice_is_a_noop() -> None:
    def first(event: Event) -> None: ...
    def second(event: Event) -> None: ...

    handler("c")(first)
    handler("c")(second)
    handler("c")(first)
    assert registry.handlers("c") == (first, second)
    assert registry.channels() == frozenset({"c"})


@pytest.mark.usefixtures("empty_registry")
def test_invalid_channels_fail_at_decoration_time() -> None:
    with pytest.raises(InvalidChannel, match="64 bytes"):

        @handler("x" * 64)
        def too_long(event: Event) -> None: ...

    with pytest.raises(InvalidChannel, match="at least one"):

        @handler()
        def none(event: Event) -> None: ...

    with pytest.raises(InvalidChannel, match="not a bare @handler"):

        @handler  # type: ignore[arg-type]
        def bare(event: Event) -> None: ...

    assert registry.channels() == frozenset()


def test_isolated_restores_the_previous_registry() -> None:
    def snapshot() -> dict[str, tuple[object, ...]]:
        return {channel: registry.handlers(channel) for channel in registry.channels()}

    before = snapshot()
    with registry.isolated():
        assert registry.channels() == frozenset()

        @handler("only.inside")
        def inside(event: Event) -> None: ...

        assert registry.handlers("only.inside") == (inside,)
    assert snapshot() == before


@pytest.mark.usefixtures("empty_registry")
def test_unregister() -> None:
    def one(event: Event) -> None: ...
    def two(event: Event) -> None: ...

    handler("a", "b")(one)
    handler("a")(two)
    registry.unregister(one, "a")
    assert registry.handlers("a") == (two,)
    assert registry.handlers("b") == (one,)
    registry.unregister(one)
    assert registry.channels() == frozenset({"a"})


@pytest.mark.usefixtures("empty_registry")
def test_autodiscover_module_names_are_configurable() -> None:
    with override_settings(PGPUBSUB={"AUTODISCOVER_MODULES": ["pubsub_extra"]}):
        autodiscover()
    from tests.testapp.pubsub_extra import extra

    assert registry.handlers("test.extra") == (extra,)


def test_an_error_in_a_handler_module_is_not_swallowed() -> None:
    with (
        override_settings(PGPUBSUB={"AUTODISCOVER_MODULES": ["pubsub_broken"]}),
        pytest.raises(RuntimeError, match="bug in pubsub_broken"),
    ):
        autodiscover()
