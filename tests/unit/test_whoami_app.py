"""whoami-app through Flask's test client: it answers the identity the proxy's headers
carry, with the contract's defaults when they are absent, and refuses bad settings."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from patterns.common.config import ConfigError
from patterns.security.whoami_app.app import create_app
from patterns.security.whoami_app.config import load_config


@pytest.fixture
def client() -> FlaskClient:
    return create_app().test_client()


def test_identity_from_the_proxys_headers(client: FlaskClient) -> None:
    response = client.get("/", headers={
        "X-Forwarded-For": "203.0.113.7",
        "X-Client-Verify": "SUCCESS",
        "X-Client-Subject": "CN=alice,O=Example",
        "X-Forwarded-Proto": "https",
    })  # fmt: skip
    assert response.status_code == 200
    assert response.get_json() == {
        "client_address": "203.0.113.7",
        "client_verify": "SUCCESS",
        "client_subject": "CN=alice,O=Example",
        "proto": "https",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_defaults_without_a_proxy(client: FlaskClient) -> None:
    assert client.get("/").get_json() == {
        "client_address": "-",
        "client_verify": "NONE",
        "client_subject": None,
        "proto": "http",
    }


def test_probes_and_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.get("/")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'whoami_app_requests_total{route="/",status="200"} 1.0' in metrics


def test_settings() -> None:
    config = load_config({})
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    # Longer than the proxy's idle timeout, so the proxy closes idle connections first.
    assert config.keepalive == 75
    with pytest.raises(ConfigError, match="WHOAMI_APP_PORT"):
        load_config({"WHOAMI_APP_PORT": "0"})
