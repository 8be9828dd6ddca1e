"""log-adapter settings: every bad variable is named at start, and records that JSON or
msgpack cannot encode as they are still go out."""

from __future__ import annotations

import io
import json

import msgpack
import pytest

from patterns.adapter.log_adapter.config import load_config
from patterns.adapter.log_adapter.output import StdoutOutput, encode_entry
from patterns.common.config import ConfigError


def test_inputs_are_parsed_with_their_formats() -> None:
    config = load_config({
        "ADAPTER_INPUTS": "combined=/var/log/app/access.log, legacy=/var/log/app/*.log",
    })
    assert [(i.format, i.glob) for i in config.inputs] == [
        ("combined", "/var/log/app/access.log"), ("legacy", "/var/log/app/*.log"),
    ]
    assert (config.admin_port, config.output, config.regex) == (9103, "stdout", None)


@pytest.mark.parametrize(("environ", "named"), [
    ({}, "ADAPTER_INPUTS is required"),
    ({"ADAPTER_INPUTS": "apache=/x.log"}, "FORMAT one of combined, legacy, json, regex"),
    ({"ADAPTER_INPUTS": "combined=relative.log"}, "FORMAT=/absolute/glob"),
    ({"ADAPTER_INPUTS": "json=/a.log,combined=/a.log"}, "each glob may appear once"),
    ({"ADAPTER_INPUTS": "regex=/a.log"}, "ADAPTER_REGEX is required"),
    ({"ADAPTER_INPUTS": "regex=/a.log", "ADAPTER_REGEX": "(?P<x>"}, "ADAPTER_REGEX:"),
    ({"ADAPTER_INPUTS": "regex=/a.log", "ADAPTER_REGEX": ".*"}, "no named groups"),
    ({"ADAPTER_INPUTS": "json=/a.log", "ADAPTER_OUTPUT": "kafka"}, "ADAPTER_OUTPUT='kafka'"),
    ({"ADAPTER_INPUTS": "json=/a.log", "ADAPTER_HTTP_PORT": "0"}, "ADAPTER_HTTP_PORT='0'"),
])
def test_bad_settings_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        load_config(environ)
    assert named in str(error.value)


def test_records_orjson_refuses_are_still_written() -> None:
    stream = io.BytesIO()
    records = [{"body": "\ud800 lone surrogate", "attributes": {"big": 2**70}}]
    StdoutOutput(stream).write(records)
    written = json.loads(stream.getvalue())
    assert written == {"body": "\ud800 lone surrogate", "attributes": {"big": 2**70}}


def test_forward_entries_survive_what_msgpack_cannot_encode() -> None:
    record = {"timestamp": "2026-11-25T12:00:00.000Z", "observed_timestamp": "x",
              "body": "\ud800", "attributes": {"big": 2**70}}
    _time, decoded = msgpack.unpackb(encode_entry(record), raw=False,
                                    ext_hook=lambda code, data: (code, data))
    assert decoded["body"] == "?"
    assert decoded["attributes"]["big"] == str(2**70)
