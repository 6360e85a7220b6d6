"""Every RPC of every service needs a token scope, and a read token is kept to the read RPCs.

The methods are enumerated from the generated service descriptors, so a new RPC without an
entry in its service's ``METHOD_SCOPES`` fails here. Each RPC is called over real gRPC on the
three real servicers with an empty request: a read token on a write RPC is PERMISSION_DENIED
before the handler runs; on a read RPC it gets past the scope check (the empty request may then
be INVALID_ARGUMENT or NOT_FOUND). A service process given a weak JWKS refuses to start.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from listboss.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from listboss.ingest.v1 import ingest_service_pb2
from listboss.segmentation.v1 import segmentation_service_pb2, segmentation_service_pb2_grpc
from listboss_common.auth import READ, SCOPES, WRITE
from listboss_common.db import create_engine
from listboss_common.keys import SigningKey
from listboss_common.processes import free_port, service_command
from listboss_contacts import schema as contacts_schema
from listboss_contacts.grpc_api import METHOD_SCOPES as CONTACTS_SCOPES
from listboss_contacts.grpc_api import ContactsServicer
from listboss_ingest import grpc_api as ingest_api
from listboss_ingest.publisher import EventPublisher
from listboss_segmentation import storage as segmentation_storage
from listboss_segmentation.grpc_api import METHOD_SCOPES as SEGMENTATION_SCOPES
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_testing import binding, rich_status, token

CONTACTS = contacts_service_pb2.DESCRIPTOR.services_by_name["ContactsService"]
INGEST = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"]
SEGMENTATION = segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"]
TABLES = {CONTACTS: CONTACTS_SCOPES, INGEST: ingest_api.METHOD_SCOPES, SEGMENTATION: SEGMENTATION_SCOPES}

# What the email tool does with a read token: list, count, export, get, watch.
EXPECTED_READ = {
    "ContactsService": {
        "GetContact",
        "ListContacts",
        "CountContacts",
        "ExportContacts",
        "ListTags",
        "ListEvents",
        "GetProductDashboard",
        "WatchTagChanges",
        "GetAudience",
        "ListAudiences",
    },
    "IngestService": set(),
    "SegmentationService": {
        "GetProduct",
        "ListProducts",
        "GetSegmentation",
        "ListSegmentations",
        "DescribeEventTypes",
        "TestSegmentation",
        "GetBackfill",
    },
}

METHODS = [(service, method) for service in TABLES for method in service.methods]


@pytest.mark.parametrize("service", TABLES, ids=lambda service: service.name)
def test_every_rpc_has_exactly_one_scope(service: ServiceDescriptor) -> None:
    table = TABLES[service]

    assert set(table) == {method.name for method in service.methods}
    assert set(table.values()) <= set(SCOPES)
    assert {name for name, scope in table.items() if scope == READ} == EXPECTED_READ[service.name]


@pytest.fixture
async def channels(tmp_path: Path, js, grpc_server) -> dict[str, grpc.aio.Channel]:
    """The three real servicers on real gRPC servers, over SQLite and the test's JetStream."""
    contacts_engine = create_engine(f"sqlite:///{tmp_path / 'contacts.db'}")
    contacts_schema.migrate_database(contacts_engine)
    segmentation_engine = create_engine(f"sqlite:///{tmp_path / 'segmentation.db'}")
    segmentation_storage.migrate_database(segmentation_engine)
    servers = {
        CONTACTS.name: binding(
            CONTACTS,
            contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server,
            ContactsServicer(contacts_engine, js),
            CONTACTS_SCOPES,
        ),
        INGEST.name: binding(
            INGEST, ingest_api.add_to_server, ingest_api.IngestServicer(EventPublisher(js)), ingest_api.METHOD_SCOPES
        ),
        SEGMENTATION.name: binding(
            SEGMENTATION,
            segmentation_service_pb2_grpc.add_SegmentationServiceServicer_to_server,
            SegmentationServicer(segmentation_engine),
            SEGMENTATION_SCOPES,
        ),
    }
    channels = {name: (await grpc_server([bound])).channel for name, bound in servers.items()}
    yield channels
    contacts_engine.dispose()
    segmentation_engine.dispose()


async def _call(
    channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor, bearer: str
) -> grpc.aio.AioRpcError | None:
    """One call with an empty request (a stream is read to its first answer); its error, if any."""
    request = message_factory.GetMessageClass(method.input_type)()
    response = message_factory.GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {bearer}"),)
    try:
        if method.server_streaming:
            call = channel.unary_stream(path, request.SerializeToString, response.FromString)(
                request, metadata=metadata, timeout=5
            )
            async for _ in call:
                break
            call.cancel()
        else:
            await channel.unary_unary(path, request.SerializeToString, response.FromString)(
                request, metadata=metadata, timeout=5
            )
    except grpc.aio.AioRpcError as error:
        return error
    return None


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda item: item.name)
async def test_read_token_on_every_rpc(channels, service: ServiceDescriptor, method: MethodDescriptor) -> None:
    error = await _call(channels[service.name], service, method, token("alice", scope=READ))

    if TABLES[service][method.name] == WRITE:
        assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED, error
        assert "needs a token with scope 'write'" in error.details()
        assert rich_status(error)[0].reason == "INSUFFICIENT_SCOPE"
    elif error is not None:
        # Past the scope check; the empty request itself may be refused (INVALID_ARGUMENT, NOT_FOUND).
        assert error.code() not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), error


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda item: item.name)
async def test_write_token_passes_the_scope_check_on_every_rpc(
    channels, service: ServiceDescriptor, method: MethodDescriptor
) -> None:
    error = await _call(channels[service.name], service, method, token("alice"))

    # An empty request may be refused, or reach an internal-only check; never for its token's scope.
    assert error is None or error.code() != grpc.StatusCode.UNAUTHENTICATED, error
    assert error is None or "scope" not in error.details(), error


# -- a service refuses weak key configuration ----------------------------------------------------


def _weak_jwks(case: str) -> str:
    key = SigningKey.generate()
    if case == "private-key":
        raw = key.private.private_bytes_raw()
        return json.dumps({"keys": [{**key.public_jwk(), "d": base64.urlsafe_b64encode(raw).decode().rstrip("=")}]})
    if case == "symmetric-key":
        return json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "shared"}]})
    return ""


@pytest.mark.parametrize(
    ("service", "case"),
    [
        ("ingest", "private-key"),
        ("segmentation", "symmetric-key"),
        ("contacts", "empty-file"),
        ("contacts", "missing-file"),
    ],
)
def test_service_refuses_to_start_with_a_weak_jwks(tmp_path: Path, service: str, case: str) -> None:
    jwks = tmp_path / "jwks.json"
    if case != "missing-file":
        jwks.write_text(_weak_jwks(case))
    env = {name: value for name, value in os.environ.items() if not name.startswith("LISTBOSS_")}
    env |= {
        "LISTBOSS_JWKS_FILE": str(jwks),
        "LISTBOSS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "LISTBOSS_METRICS_ADDRESS": "",
        "LISTBOSS_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # never reached: the key check is first
        "LISTBOSS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
    }

    result = subprocess.run(service_command(service), env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "refusing to start" in result.stderr
    assert str(jwks) in result.stderr
    assert "Traceback" not in result.stderr
