"""Shared fixtures: the ../shared data folder, an isolated pyramid cache and model search path, slide
file factories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

FUZZ_DEADLINE_MS = 2000
"""Per-call deadline of the property-based tests: a parser that takes longer on one input has hung."""
settings.register_profile(
    "suite", max_examples=60, deadline=FUZZ_DEADLINE_MS, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(  # benchmarks/fuzz_campaign.py: the long campaign, seeded
    "campaign", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")), deadline=FUZZ_DEADLINE_MS,
    derandomize=False, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; skipped where absent, but a failure in CI (``CI`` set to any
    non-empty value)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing, and CI is set: the shared-data tests must run in CI")
        pytest.skip("../shared/data not found beside the repository")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own pyramid cache folder (never the user's ~/.cache)."""
    root = tmp_path_factory.mktemp("pyramid-cache")
    monkeypatch.setenv("NAPARI_HUBMAP_CACHE", str(root))
    return root


@pytest.fixture(scope="session")
def session_onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(autouse=True)
def isolated_onnx_cache(session_onnx_cache, monkeypatch) -> Path:
    """ONNX graphs go to one folder of this test session (never the user's ~/.cache); graphs are keyed by
    their weights, so tests share them safely and each network is exported once."""
    monkeypatch.setenv("NAPARI_HUBMAP_ONNX_CACHE", str(session_onnx_cache))
    return session_onnx_cache


@pytest.fixture(autouse=True)
def isolated_models_search(tmp_path_factory, monkeypatch) -> None:
    """Tests see neither the user's models nor the shipped ones (``models/``), unless they ask for
    them with :func:`bundled_models`; the setting reaches subprocesses through the environment."""
    monkeypatch.setenv("NAPARI_HUBMAP_BUNDLED_MODELS", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture
def bundled_models(monkeypatch) -> Path:
    """The repository's shipped ``models/`` folder, back on the search path."""
    from napari_hubmap.registry.store import repository_models_folder

    monkeypatch.delenv("NAPARI_HUBMAP_BUNDLED_MODELS")
    return repository_models_folder()


FAIL_ON_SKIP = "NAPARI_HUBMAP_FAIL_ON_SKIP"
"""Set (``.ci/run`` sets it): a run that skipped any test fails, naming the skips."""


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get(FAIL_ON_SKIP):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.ensure_newline()
        for report in skipped:
            reporter.write_line(f"SKIPPED, and {FAIL_ON_SKIP} is set: {report.nodeid} ({report.longrepr[-1]})", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
