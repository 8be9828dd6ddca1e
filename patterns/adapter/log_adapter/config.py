"""log-adapter settings, all from the environment (see patterns/adapter/README.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.adapter.log_adapter.formats import FORMATS, RegexFormat
from patterns.common.config import Env
from patterns.common.forward.settings import ForwardSettings, forward_settings

OUTPUTS = ("stdout", "forward", "none")


@dataclass(frozen=True)
class InputSpec:
    """One `FORMAT=GLOB` pair of ADAPTER_INPUTS; the glob is also the `input` label."""

    format: str
    glob: str

    @property
    def name(self) -> str:
        return self.glob


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    inputs: tuple[InputSpec, ...]
    state_dir: Path
    output: str
    forward: ForwardSettings  # FLUENT_HOST, FLUENT_PORT, FLUENT_TAG, FLUENT_SHARED_KEY
    service_name: str
    regex: RegexFormat | None
    multiline_flush_seconds: float
    max_record_bytes: int
    max_line_bytes: int
    max_paths: int
    read_bytes: int
    poll_seconds: float
    use_inotify: bool
    follow_symlinks: bool  # the follower's Limits: see patterns/common/follower
    max_files: int
    shutdown_timeout: float


def parse_inputs(env: Env, name: str) -> tuple[InputSpec, ...]:
    specs = []
    items: list[str] = env.list(name, required=True)
    for item in items:
        fmt, sep, glob = item.partition("=")
        fmt, glob = fmt.strip(), glob.strip()
        if not sep or fmt not in FORMATS or not glob.startswith("/"):
            env.problems.append(
                f"{name}: {item!r} must be FORMAT=/absolute/glob with FORMAT one of "
                + ", ".join(FORMATS)
            )
            continue
        specs.append(InputSpec(fmt, glob))
    globs = [spec.glob for spec in specs]
    if len(set(globs)) != len(globs):
        env.problems.append(f"{name}: each glob may appear once (it names the input)")
    return tuple(specs)


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    inputs = parse_inputs(env, "ADAPTER_INPUTS")
    regex = None
    regex_text = env.optional_str("ADAPTER_REGEX")
    if regex_text is not None:
        try:
            regex = RegexFormat.compile(regex_text, env.optional_str("ADAPTER_REGEX_TIME_FORMAT"))
        except (re.error, ValueError) as exc:
            env.problems.append(f"ADAPTER_REGEX: {exc}")
    elif any(spec.format == "regex" for spec in inputs):
        env.problems.append("ADAPTER_REGEX is required by a regex= input")
    output = env.choice("ADAPTER_OUTPUT", "stdout", OUTPUTS)
    config = Config(
        admin_host=env.str("ADAPTER_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("ADAPTER_HTTP_PORT", 9103),
        inputs=inputs,
        state_dir=env.writable_dir("ADAPTER_STATE_DIR", "/var/lib/log-adapter"),
        output=output,
        forward=forward_settings(env, default_tag="adapter"),
        service_name=env.str("OTEL_SERVICE_NAME", "unknown_service"),
        regex=regex,
        multiline_flush_seconds=env.float(
            "ADAPTER_MULTILINE_FLUSH_SECONDS", 1.0, min=0.01, max=3600
        ),
        max_record_bytes=env.int("ADAPTER_MAX_RECORD_BYTES", 65536, min=1024),
        max_line_bytes=env.int("ADAPTER_MAX_LINE_BYTES", 65536, min=256),
        max_paths=env.int("ADAPTER_MAX_PATHS", 100, min=1),
        read_bytes=env.int("ADAPTER_READ_BYTES", 1 << 20, min=4096),
        poll_seconds=env.float("ADAPTER_POLL_SECONDS", 0.25, min=0.01, max=60),
        use_inotify=env.bool("ADAPTER_INOTIFY", True),
        follow_symlinks=env.bool("ADAPTER_FOLLOW_SYMLINKS", False),
        max_files=env.int("ADAPTER_MAX_FILES", 256, min=1, max=1_000_000),
        shutdown_timeout=env.float("ADAPTER_SHUTDOWN_TIMEOUT", 10.0, min=0, max=3600),
    )
    env.check()
    return config
