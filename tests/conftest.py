"""Fixtures for the tests that run the whole suite as processes."""

from __future__ import annotations

import pytest

from listboss_tools.suite import Suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """nats-server and the three services as processes on free ports, one suite per test module."""
    suite = Suite(
        tmp_path_factory.mktemp("suite"),
        nats_port=0,
        ingest_port=0,
        segmentation_port=0,
        contacts_port=0,
        http_port=0,
        output=None,
    )
    suite.start()
    yield suite
    # Every process shut down cleanly on SIGTERM.
    assert suite.stop() == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}
