"""Configuration: typed defaults, and one clear error naming every bad variable."""

import pytest

from patterns.common.config import ConfigError, Env, parse_host_port


def test_defaults_apply_when_unset_or_blank():
    env = Env({"EMPTY": "  "})
    assert env.int("MISSING", 7) == 7
    assert env.str("EMPTY", "dflt") == "dflt"
    assert env.list("MISSING", ["a"]) == ["a"]
    assert env.bool("MISSING", True) is True
    env.check()


def test_values_are_parsed_to_their_types():
    env = Env({"N": "42", "F": "1.5", "B": "off", "L": " a, b ,,c ", "C": "forward",
               "P": "[::1]:5432"})
    assert env.int("N", 0) == 42
    assert env.float("F", 0.0) == 1.5
    assert env.bool("B", True) is False
    assert env.list("L") == ["a", "b", "c"]
    assert env.choice("C", "stdout", ("stdout", "forward", "none")) == "forward"
    assert env.host_port("P", "127.0.0.1:1") == ("::1", 5432)
    env.check()


def test_every_problem_is_reported_at_once_by_variable_name():
    env = Env({"PORT": "99999", "COUNT": "many", "MODE": "loud", "RATIO": "nan"})
    env.port("PORT", 80)
    env.int("COUNT", 1)
    env.choice("MODE", "quiet", ("quiet", "verbose"))
    env.float("RATIO", 0.5, min=0, max=1)
    env.list("PATHS", required=True)
    with pytest.raises(ConfigError) as error:
        env.check()
    message = str(error.value)
    for expected in (
        "PORT='99999': expected an integer in [1, 65535]",
        "COUNT='many': expected an integer",
        "MODE='loud': expected one of quiet, verbose",
        "RATIO='nan'",
        "PATHS is required",
    ):
        assert expected in message


@pytest.mark.parametrize("level", ["debug", "INFO", " Warning ", "warn", "error", "critical", ""])
def test_known_log_levels_are_accepted_in_any_case(level):
    Env({"LOG_LEVEL": level}).check()


def test_an_unknown_log_level_is_reported_by_every_env():
    env = Env({"LOG_LEVEL": "bogus", "PORT": "x"})
    env.port("PORT", 80)
    with pytest.raises(ConfigError) as error:
        env.check()
    assert "LOG_LEVEL='bogus': expected debug, info, warning, error or critical" in str(error.value)
    assert "PORT='x'" in str(error.value)


@pytest.mark.parametrize("text", ["", "host", "host:", ":80", "host:0", "host:70000", "host:8o"])
def test_malformed_host_port_is_rejected(text):
    assert parse_host_port(text) is None
