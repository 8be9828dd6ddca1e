"""The shipper's tag seam (patterns/sidecar/shipper/tags.py): by default every file goes
under FLUENT_TAG; a rule's tag is used when a collector would take it, and a batch whose
rule returns an unusable tag, or raises, goes under FLUENT_TAG, counted and logged a
bounded number of times."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from patterns.common.forward import protocol
from patterns.sidecar.shipper import tags
from patterns.sidecar.shipper.tags import Tags, load_rule, valid_tag


def refused() -> Counter:
    return Counter("tags_refused", "test", registry=CollectorRegistry())


def test_the_default_rule_sends_every_file_under_the_configured_tag() -> None:
    assert tags.TAG_RULE == "tags:fixed"
    rule = load_rule(tags.TAG_RULE, "app.access")
    assert [rule(path) for path in ("/v/a.log", "/v/error.log", "/v/\udcff.log")] == [
        "app.access"] * 3


def test_a_rule_is_named_module_colon_function_in_the_shippers_package() -> None:
    rule = load_rule("encode:valid_utf8", "x")  # any function of the package: str -> ...
    assert rule == "x"
    with pytest.raises(ModuleNotFoundError):
        load_rule("no_such_module:fixed", "x")


def test_the_rules_tag_is_used_when_a_collector_would_take_it() -> None:
    counter = refused()
    tags_ = Tags(lambda path: "app." + path.rsplit("/", 1)[-1], "app", counter)
    assert tags_("/v/error.log") == "app.error.log"
    assert counter._value.get() == 0


@pytest.mark.parametrize("tag", [
    "", "x" * 1025, "app.\n", "app.\x00", "app.\udcff", None, 7, b"app",
])
def test_an_unusable_tag_goes_under_the_configured_tag(tag: object) -> None:
    assert not valid_tag(tag)
    counter = refused()
    assert Tags(lambda _path: tag, "app", counter)("/v/a.log") == "app"  # type: ignore[arg-type, return-value]
    assert counter._value.get() == 1


@pytest.mark.parametrize("tag", [
    "app", "app.logs.access", "x" * 1024, "é.✓", "a b", "", "x" * 1025, "app.\n", "app.\udcff",
])
def test_the_check_agrees_with_the_collectors_decoder(tag: str) -> None:
    entry = protocol.encode_entry(1.0, {"log": "x"})
    try:
        request = protocol.decode_frame(protocol.encode_packed_forward(tag, entry, 1, "c"))
    except (protocol.ProtocolError, UnicodeEncodeError):
        taken = False
    else:
        taken = request is not None and request.tag == tag
    assert valid_tag(tag) == taken


def test_a_rule_that_raises_does_not_stop_shipping(caplog: pytest.LogCaptureFixture) -> None:
    def broken(path: str) -> str:
        raise KeyError(path)

    counter = refused()
    tags_ = Tags(broken, "app", counter)
    with caplog.at_level(logging.WARNING, logger="patterns.sidecar.shipper.tags"):
        assert [tags_(f"/v/{n}.log") for n in range(100)] == ["app"] * 100
    assert counter._value.get() == 100
    # Logged the 1st, 2nd, 4th... time: a hostile name cannot flood the log.
    assert [r.refusals for r in caplog.records] == [1, 2, 4, 8, 16, 32, 64]  # type: ignore[attr-defined]
    assert "KeyError" in caplog.records[0].why  # type: ignore[attr-defined]
