"""A Forward client's settings, read the same way by every service that forwards (the
shipper, the adapter's `forward` output): one name and one parser for each.

| variable | default | meaning |
| --- | --- | --- |
| `FLUENT_HOST` | `127.0.0.1` | the collector (Fluentd, Fluent Bit, log-collector) |
| `FLUENT_PORT` | `24224` | its Forward port |
| `FLUENT_TAG` | the service's | the tag every record is sent under |
| `FLUENT_SHARED_KEY` | unset | the `<security>` handshake's key; unset: none |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from patterns.common.config import Env


@dataclass(frozen=True)
class ForwardSettings:
    host: str
    port: int
    tag: str
    shared_key: str | None = field(repr=False)  # a secret: never in a repr or a log

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def forward_settings(env: Env, default_tag: str) -> ForwardSettings:
    return ForwardSettings(
        host=env.str("FLUENT_HOST", "127.0.0.1"),
        port=env.port("FLUENT_PORT", 24224),
        tag=env.str("FLUENT_TAG", default_tag),
        shared_key=env.optional_str("FLUENT_SHARED_KEY"),
    )
