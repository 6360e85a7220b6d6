"""TLS end to end: the three services as processes serving TLS (then mutual TLS) with
certificates from a throw-away CA; our gRPC clients, grpcurl and an HTTPS webhook client
against them; and what a bad TLS configuration does to a service's start."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss_common.processes import GRPC_CHANNEL_OPTIONS, ProcessError, health_status
from listboss_common.tls import CERT_FILE_ENV, KEY_FILE_ENV, ClientTls, grpc_channel
from listboss_testing.pki import Pki
from listboss_tools.suite import Suite

pytestmark = pytest.mark.e2e

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
WEBHOOK = Path(__file__).parent / "data" / "hotmart" / "PURCHASE_APPROVED.json"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def start_suite(folder: Path, env: dict[str, str]) -> Suite:
    suite = Suite.on_free_ports(folder, extra_env=env)
    suite.start()  # waits for every service's health over TLS (the probe's CA is in env)
    return suite


@pytest.fixture(scope="module")
def tls_suite(tmp_path_factory, pki):
    suite = start_suite(tmp_path_factory.mktemp("tls-suite"), pki.server_env())
    yield suite
    assert set(suite.stop().values()) == {0}


@pytest.fixture(scope="module")
def mtls_suite(tmp_path_factory, pki):
    suite = start_suite(tmp_path_factory.mktemp("mtls-suite"), pki.server_env(mutual=True))
    yield suite
    assert set(suite.stop().values()) == {0}


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def list_contacts(address: str, tls: ClientTls | None, token: str) -> contacts_pb.ListContactsResponse:
    with grpc_channel(address, tls, GRPC_CHANNEL_OPTIONS) as channel:
        return contacts_grpc.ContactsServiceStub(channel).ListContacts(
            contacts_pb.ListContactsRequest(parent="producers/demo"), metadata=auth(token), timeout=10
        )


def health(address: str, tls: ClientTls | None) -> str:
    return health_status(address, timeout=5, tls=tls)


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)


# --- TLS ---------------------------------------------------------------------------------------


def test_every_grpc_port_answers_over_tls_with_the_ca(tls_suite, pki):
    for address in tls_suite.grpc_addresses.values():
        assert health(address, pki.client()) == "SERVING"
    answer = list_contacts(tls_suite.contacts_address, pki.client(), tls_suite.producer_token("demo"))
    assert isinstance(answer, contacts_pb.ListContactsResponse)


def test_plaintext_and_untrusting_clients_are_refused(tls_suite, pki):
    stranger = ClientTls.load(pki.other_ca_file)
    for address in tls_suite.grpc_addresses.values():
        assert health(address, None) == "UNAVAILABLE"
        assert health(address, stranger) == "UNAVAILABLE"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("port", ["contacts", "http"])
def test_tls_older_than_1_2_is_refused(tls_suite, pki, port):
    host, number = tls_suite.host, tls_suite.ports[port]
    for version in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2):
        context = ssl.create_default_context(cafile=pki.ca_file)
        context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client offers TLS 1.1 at all
        context.set_alpn_protocols(["h2"] if port != "http" else ["http/1.1"])
        with socket.create_connection((host, number), timeout=5) as raw:
            if version == ssl.TLSVersion.TLSv1_2:
                with context.wrap_socket(raw, server_hostname=host) as secured:
                    assert secured.version() == "TLSv1.2"
            else:
                # The server answers an offer of TLS 1.1 and nothing newer with a protocol-version
                # alert (aiohttp's OpenSSL) or by hanging up (gRPC's BoringSSL).
                with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNEXPECTED_EOF"):
                    context.wrap_socket(raw, server_hostname=host)


def test_grpcurl_lists_services_with_the_ca(tls_suite, pki):
    listed = grpcurl("-cacert", str(pki.ca_file), tls_suite.contacts_address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "listboss.contacts.v1.ContactsService" in listed.stdout.split()
    plaintext = grpcurl("-plaintext", tls_suite.contacts_address, "list")
    assert plaintext.returncode != 0


async def test_the_webhook_receiver_answers_https_and_refuses_http(tls_suite, pki):
    body = WEBHOOK.read_bytes()
    headers = {"X-HOTMART-HOTTOK": tls_suite.demo_hottok, "Content-Type": "application/json"}
    path = f"{tls_suite.http_address}/webhooks/hotmart/demo"
    trusting = ssl.create_default_context(cafile=pki.ca_file)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.post(f"https://{path}", data=body, headers=headers, ssl=trusting) as answer:
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["event_id"] == json.loads(body)["id"]
        with pytest.raises(aiohttp.ClientError):
            async with session.post(f"http://{path}", data=body, headers=headers) as answer:
                await answer.read()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.post(f"https://{path}", data=body, headers=headers) as answer:
                await answer.read()  # the system's roots do not know the throw-away CA


# --- mutual TLS ----------------------------------------------------------------------------------


def test_mutual_tls_refuses_a_caller_without_a_client_certificate(mtls_suite, pki):
    for address in mtls_suite.grpc_addresses.values():
        assert health(address, pki.client()) == "UNAVAILABLE"
        assert health(address, pki.client(with_certificate=True)) == "SERVING"


def test_internal_tokens_need_the_client_certificate_producer_tokens_work_as_before(mtls_suite, pki):
    address = mtls_suite.contacts_address
    with pytest.raises(grpc.RpcError) as refused:
        list_contacts(address, pki.client(), mtls_suite.internal_token)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    certified = pki.client(with_certificate=True)
    assert isinstance(list_contacts(address, certified, mtls_suite.internal_token), contacts_pb.ListContactsResponse)
    assert isinstance(
        list_contacts(address, certified, mtls_suite.producer_token("demo")), contacts_pb.ListContactsResponse
    )
    # A producer's token still grants only its own producer.
    with pytest.raises(grpc.RpcError) as denied:
        list_contacts(address, certified, mtls_suite.producer_token("someone-else"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_grpcurl_over_mutual_tls(mtls_suite, pki):
    address = mtls_suite.segmentation_address
    certificate = ["-cert", str(pki.client_cert_file), "-key", str(pki.client_key_file)]
    listed = grpcurl("-cacert", str(pki.ca_file), *certificate, address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "listboss.segmentation.v1.SegmentationService" in listed.stdout.split()
    checked = grpcurl("-cacert", str(pki.ca_file), *certificate, address, "grpc.health.v1.Health/Check")
    assert json.loads(checked.stdout) == {"status": "SERVING"}
    assert grpcurl("-cacert", str(pki.ca_file), address, "list").returncode != 0


# --- bad configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("certificate only", f"{CERT_FILE_ENV} is set but {KEY_FILE_ENV} is not"),
        ("missing key file", f"{KEY_FILE_ENV}: cannot read"),
    ],
)
def test_a_bad_tls_configuration_fails_the_start_with_a_clear_message(tmp_path, pki, settings, message):
    env = {CERT_FILE_ENV: str(pki.cert_file), KEY_FILE_ENV: "" if settings == "certificate only" else "/nowhere.key"}
    suite = Suite.on_free_ports(tmp_path, extra_env=env, start_timeout=20)
    with pytest.raises(ProcessError) as failed:
        suite.start()
    # The first service (ingest) exits non-zero, naming the setting at fault.
    assert "exited with code 1" in str(failed.value)
    assert message in str(failed.value)


def test_the_health_probe_command_speaks_tls(tls_suite, pki):
    probe = [sys.executable, "-m", "listboss_common.healthcheck", tls_suite.ingest_address]
    env = {"PATH": "/usr/bin:/bin", "LISTBOSS_TLS_CA_FILE": str(pki.ca_file)}
    secured = subprocess.run(probe, capture_output=True, text=True, timeout=30, env=env)
    assert secured.returncode == 0, secured.stderr
    assert "SERVING" in secured.stdout
    plaintext = subprocess.run(probe, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr


# --- our tools ---------------------------------------------------------------------------------


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / f"listboss-{name}"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_listboss_ops_and_the_demo_over_mutual_tls(mtls_suite, pki):
    tls = ["--cacert", str(pki.ca_file), "--cert", str(pki.client_cert_file), "--key", str(pki.client_key_file)]
    suite_file = ["--suite-file", str(mtls_suite.suite_file)]
    status = tool("ops", "status", "--json", *suite_file, *tls)
    assert {name: service["health"] for name, service in json.loads(status.stdout)["services"].items()} == {
        "ingest": "SERVING",
        "segmentation": "SERVING",
        "contacts": "SERVING",
    }, status.stderr
    plaintext = tool("ops", "status", "--json", *suite_file)
    assert {service["health"] for service in json.loads(plaintext.stdout)["services"].values()} == {"UNAVAILABLE"}
    demo = tool("demo", *suite_file, *tls)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
