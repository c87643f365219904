"""Flow tests run against Prefect's test harness (one ephemeral server per session) and MLflow on
SQLite under tmp_path, never against a user's server."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_external_services(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "LLMOPS_ROOT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
