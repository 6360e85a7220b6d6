"""TLS settings and the production gRPC server over TLS and mutual TLS, in process: a CA made
by trustme, real servers on free ports, real clients."""

from __future__ import annotations

import ssl

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listboss_common.auth import READ
from listboss_common.config import ConfigError
from listboss_common.grpc_server import ServiceBinding
from listboss_common.tls import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    CLIENT_CA_FILE_ENV,
    CLIENT_CERT_FILE_ENV,
    KEY_FILE_ENV,
    ClientTls,
    ServerTls,
    client_certificate_verified,
    grpc_aio_channel,
)
from listboss_testing.pki import Pki
from listboss_testing.tokens import bearer

PROBE_SERVICE = "listboss.testing.v1.TransportProbe"
PROBE_METHOD = f"/{PROBE_SERVICE}/ClientCertificateVerified"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def probe_binding() -> ServiceBinding:
    """A method answering whether its call came with a verified client certificate (b"1")."""

    async def verified(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"1" if client_certificate_verified(context) else b"0"

    handler = grpc.unary_unary_rpc_method_handler(verified)
    return ServiceBinding(
        PROBE_SERVICE,
        lambda server: server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(PROBE_SERVICE, {"ClientCertificateVerified": handler}),)
        ),
        {"ClientCertificateVerified": READ},
    )


async def check_health(channel: grpc.aio.Channel) -> str:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def probe(channel: grpc.aio.Channel, producer: str | None = "demo") -> bytes:
    return await channel.unary_unary(PROBE_METHOD)(b"", metadata=bearer(producer), timeout=5)


# --- settings ----------------------------------------------------------------------------------


def test_no_settings_means_plaintext():
    assert ServerTls.from_env({}) is None
    assert ClientTls.from_env({}) is None


def test_a_certificate_without_its_key_names_the_missing_setting(pki):
    with pytest.raises(ConfigError, match=KEY_FILE_ENV):
        ServerTls.from_env({CERT_FILE_ENV: str(pki.cert_file)})
    with pytest.raises(ConfigError, match=CERT_FILE_ENV):
        ServerTls.from_env({KEY_FILE_ENV: str(pki.key_file)})
    with pytest.raises(ConfigError, match=CERT_FILE_ENV):
        ServerTls.from_env({CLIENT_CA_FILE_ENV: str(pki.client_ca_file)})


def test_missing_invalid_and_mismatched_files_name_the_file(pki, tmp_path):
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=f"{CERT_FILE_ENV}: cannot read {missing}"):
        ServerTls.load(missing, pki.key_file)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match=f"{KEY_FILE_ENV}: {not_pem} holds no PEM private key"):
        ServerTls.load(pki.cert_file, not_pem)
    with pytest.raises(ConfigError, match=f"{CLIENT_CA_FILE_ENV}: {not_pem} holds no PEM certificate"):
        ServerTls.load(pki.cert_file, pki.key_file, not_pem)
    with pytest.raises(ConfigError, match="is not the private key of the certificate"):
        ServerTls.load(pki.cert_file, pki.client_key_file)
    with pytest.raises(ConfigError, match=CLIENT_CERT_FILE_ENV):
        ClientTls.from_env({CA_FILE_ENV: str(pki.ca_file)}, key_file=pki.client_key_file)


def test_options_win_over_the_environment(pki):
    tls = ClientTls.from_env({CA_FILE_ENV: str(pki.other_ca_file)}, ca_file=pki.ca_file)
    assert tls is not None and tls.ca == pki.ca_file.read_bytes()


def test_the_webhook_context_accepts_tls_1_2_at_the_oldest(pki):
    context = pki.server().http_ssl_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # the platform authenticates with its token


# --- the production gRPC server ------------------------------------------------------------------


async def test_a_tls_server_answers_a_client_trusting_its_ca(grpc_server, pki):
    served = await grpc_server([probe_binding()], tls=pki.server(), client_tls=pki.client())
    assert await check_health(served.channel) == "SERVING"
    # Server-side TLS only: no client certificate was asked for.
    assert await probe(served.channel) == b"0"


async def test_a_tls_server_refuses_plaintext_and_strangers(grpc_server, pki):
    served = await grpc_server([probe_binding()], tls=pki.server(), client_tls=pki.client())
    address = f"127.0.0.1:{served.port}"
    for client in (None, ClientTls.load(pki.other_ca_file)):
        async with grpc_aio_channel(address, client) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check_health(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_signed_by_the_client_ca(grpc_server, pki):
    served = await grpc_server([probe_binding()], tls=pki.server(mutual=True), client_tls=pki.client(True))
    assert await probe(served.channel) == b"1"
    assert await probe(served.channel, producer=None) == b"1"  # the internal role, with its certificate
    address = f"127.0.0.1:{served.port}"
    stranger = ClientTls.load(pki.ca_file, pki.stranger_cert_file, pki.stranger_key_file)
    for client in (pki.client(), stranger):
        async with grpc_aio_channel(address, client) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await probe(channel, producer=None)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_server_sees_no_client_certificate(grpc_server):
    served = await grpc_server([probe_binding()])
    assert await probe(served.channel) == b"0"
