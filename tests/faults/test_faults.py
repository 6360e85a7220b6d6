"""Fault injection under load: 10,000 events through ingest while PostgreSQL, a service or
nats-server fails, or while a poison record rides the bus; afterwards every accepted event
is in the history exactly once, every tag count equals its links, the tags equal those of
the same events without the fault, and nothing is dead-lettered but the poison.

Each test gets its own PostgreSQL cluster (initdb/pg_ctl on a free port) and its own suite
(nats-server and the three services as processes). Run them with

    .venv/bin/python -m pytest tests/faults -q -s

Every scenario's recovery figures are summed up at the end of the session and written to
``<pytest's base tmp>/fault-figures.json`` (the path is printed); ``-s`` also shows the
progress of each run. Each ``finish`` waits a bounded time: a run that never catches up
fails after at most its ``catch_up_timeout``, and sooner once nothing is left to deliver.
"""

from __future__ import annotations

import time

import pytest

from listboss.events.v1 import event_pb2
from listboss_tools.suite import health_status

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

POSTGRES_OUTAGE_S = 150.0
SERVICE_DOWN_S = 2.0
NATS_DOWN_S = 5.0


# The durable consumer each killed service holds messages of: the kill waits until it holds
# some, so that it lands on work in progress (ingest holds none: its work is the RPC in flight).
# (Contacts: the consumer of one partition of the changes; its one replica works them all.)
CONSUMERS = {"segmentation": ("LISTBOSS_EVENTS", "segmentation"), "contacts": ("LISTBOSS_CHANGES", "contacts-p0")}


def test_control_run_without_a_fault(new_run):
    """The same load with no fault: checks the checks (the in-process expectation matches
    what the suite really does) and gives the figures to compare the others with."""
    run = new_run("control")
    run.start_load()
    run.finish(catch_up_timeout=60).assert_ok()


def health_becomes(suite, service: str, expected: str, timeout: float) -> float:
    """Polls ``service``'s health until it reports ``expected``; returns the seconds it took."""
    started = time.monotonic()
    status = health_status(suite.grpc_addresses[service])
    while status != expected:
        assert time.monotonic() - started < timeout, f"{service} health stayed {status}, expected {expected}"
        time.sleep(0.2)
        status = health_status(suite.grpc_addresses[service])
    return time.monotonic() - started


def test_postgres_stopped_for_150_s_mid_load(new_run, fault_suite, postgres):
    run = new_run("postgres-stopped-150s")
    run.start_load()
    run.wait_answered(0.3)
    with run.fault(f"PostgreSQL stopped (pg_ctl -m fast) for {POSTGRES_OUTAGE_S:.0f} s") as fault:
        postgres.stop("fast")
        began = time.monotonic()
        # The services that use the database say so on their health while it is away.
        fault["not_serving_after_s"] = {
            service: round(health_becomes(fault_suite, service, "NOT_SERVING", timeout=30), 1)
            for service in ("segmentation", "contacts")
        }
        assert health_status(fault_suite.grpc_addresses["ingest"]) == "SERVING"  # it has no database
        time.sleep(max(0.0, POSTGRES_OUTAGE_S - (time.monotonic() - began)))
        postgres.start()
        fault["serving_again_after_s"] = {
            service: round(health_becomes(fault_suite, service, "SERVING", timeout=60), 1)
            for service in ("segmentation", "contacts")
        }
    run.finish(catch_up_timeout=120).assert_ok()


@pytest.mark.parametrize("service", ["ingest", "segmentation", "contacts"])
def test_service_killed_mid_load_then_restarted(new_run, fault_suite, service):
    run = new_run(f"kill-9-{service}")
    run.start_load()
    run.wait_answered(0.4)
    held = run.wait_in_flight(*CONSUMERS[service]) if service in CONSUMERS else None
    with run.fault(f"{service} killed with SIGKILL, restarted {SERVICE_DOWN_S:.0f} s later") as fault:
        fault["messages_in_flight"] = held
        fault_suite.kill(service)
        time.sleep(SERVICE_DOWN_S)
        fault_suite.restart(service)
    run.finish(catch_up_timeout=90).assert_ok()


def test_nats_killed_mid_load_then_restarted_on_its_store(new_run, fault_suite):
    run = new_run("kill-9-nats")
    run.start_load()
    run.wait_answered(0.4)
    with run.fault(f"nats-server killed with SIGKILL, restarted on the same store {NATS_DOWN_S:.0f} s later") as fault:
        fault_suite.kill("nats")
        began = time.monotonic()
        # Every service depends on NATS: each says so while it is away, and recovers by itself.
        fault["not_serving_after_s"] = {
            service: round(health_becomes(fault_suite, service, "NOT_SERVING", timeout=NATS_DOWN_S), 1)
            for service in ("ingest", "segmentation", "contacts")
        }
        time.sleep(max(0.0, NATS_DOWN_S - (time.monotonic() - began)))
        fault_suite.restart("nats")
        fault["serving_again_after_s"] = {
            service: round(health_becomes(fault_suite, service, "SERVING", timeout=30), 1)
            for service in ("ingest", "segmentation", "contacts")
        }
    run.finish(catch_up_timeout=90).assert_ok()


def test_poison_record_is_dead_lettered_alone(new_run):
    """One event PostgreSQL cannot store (a NUL in the person's name) inside a packed batch of
    1,000 good ones, put straight on the bus because ingest would refuse it: the others are
    applied, and the poison alone lands in LISTBOSS_DEADLETTER, named in the headers."""
    run = new_run("poison-record")
    run.start_load()
    run.wait_answered(0.5)
    good = [run.factory.event() for _ in range(1_000)]
    # A person of its own, newest of all: the NUL name is what the contact row would hold.
    poison = run.factory.event(email="poison@example.com", name="A\x00B", newest=True)
    batch = [*good[:500], poison, *good[500:]]
    for event in batch:  # as ingest would have stamped them
        event.source = event_pb2.EVENT_SOURCE_GRPC
        event.receive_time.GetCurrentTime()
    with run.fault("a packed batch of 1,001 events holding one poison record published on the bus"):
        run.publish(batch, poison=[poison])
    run.finish(catch_up_timeout=120).assert_ok()
