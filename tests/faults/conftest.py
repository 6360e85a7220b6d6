"""Fixtures of the fault-injection tests: a throwaway PostgreSQL cluster and the whole
suite on it, fresh for each test, and the file the recovery figures go to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from listboss_tools.suite import Suite

from .harness import FaultRun, summary
from .postgres import ThrowawayPostgres, throwaway_postgres

FIGURES = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault injection under load (PostgreSQL, NATS and service failures); minutes long"
    )


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Each scenario's figures at the end of the session, with or without -s."""
    path = config.stash.get(FIGURES, None)
    if path is None or not path.exists():
        return
    terminalreporter.section("fault injection: recovery figures")
    for scenario, figures in json.loads(path.read_text()).items():
        terminalreporter.write_line(f"{scenario}: {summary(figures)}")
    terminalreporter.write_line(f"(all figures: {path})")


@pytest.fixture(scope="session")
def figures_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every scenario's recovery figures are collected (JSON, one key per scenario)."""
    path = tmp_path_factory.getbasetemp() / "fault-figures.json"
    path.unlink(missing_ok=True)
    request.config.stash[FIGURES] = path
    return path


@pytest.fixture
def postgres(tmp_path: Path):
    """A PostgreSQL cluster of this test's own, running on a free port; removed afterwards."""
    with throwaway_postgres(tmp_path / "postgres.log") as server:
        yield server


@pytest.fixture
def fault_suite(tmp_path: Path, postgres: ThrowawayPostgres):
    """nats-server and the three services as processes, on the test's PostgreSQL.

    The children's output goes to ``suite.log`` in the test's tmp folder (named in a
    failing test's report through the captured output)."""
    log_path = tmp_path / "suite.log"
    with log_path.open("w") as log:
        suite = Suite(
            tmp_path / "suite",
            nats_port=0,
            ingest_port=0,
            segmentation_port=0,
            contacts_port=0,
            http_port=0,
            database=postgres.url,
            output=log,
        )
        print(f"\nsuite output: {log_path}")
        suite.start()
        try:
            yield suite
        finally:
            if not postgres.running():  # a failed test may leave it stopped; services drain into it
                postgres.start()
            codes = suite.stop()
            print(f"suite stopped: {codes}")


@pytest.fixture
def new_run(fault_suite: Suite, figures_file: Path):
    """Makes the test's FaultRun(s) on its suite; stops their load when the test ends,
    passed or not, before the suite stops."""
    runs: list[FaultRun] = []

    def make(scenario: str, **options) -> FaultRun:
        run = FaultRun(scenario, fault_suite, figures_file, **options)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()
