"""Bearer tokens against a real gRPC server: what is accepted, what is refused and how, key
rotation and revocation while the server runs, and the key files a service refuses to start with.

The server is the production GrpcServer with a one-method service of its own (raw bytes, no
protobuf) that answers with the principal it was handed, so each test sees exactly what the
interceptor decided.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from listboss_common.auth import READ, WRITE, TokenVerifier, current_principal, issue_token
from listboss_common.config import ConfigError
from listboss_common.grpc_server import ServiceBinding
from listboss_common.keys import SigningKey, write_replacing
from listboss_testing import eventually, rich_status

SERVICE = "listboss.authtest.v1.Echo"
READ_METHOD = f"/{SERVICE}/Read"
WRITE_METHOD = f"/{SERVICE}/Write"
UNLISTED_METHOD = f"/{SERVICE}/Unlisted"
# Short, so the tests that change a file see the change within their bounded wait.
CHECK_INTERVAL = 0.05


async def _whoami(request: bytes, context) -> bytes:
    principal = current_principal.get()
    return f"{principal.producer or 'internal'}|{principal.scope}".encode()


def _echo_binding() -> ServiceBinding:
    handler = grpc.unary_unary_rpc_method_handler(_whoami)
    handlers = {"Read": handler, "Write": handler, "Unlisted": handler}
    return ServiceBinding(
        SERVICE,
        lambda server: server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),)),
        {"Read": READ, "Write": WRITE},  # "Unlisted" has no entry: refused
    )


def _write_jwks(path: Path, *keys: SigningKey, extra: list[dict] | None = None) -> None:
    write_replacing(path, json.dumps({"keys": [key.public_jwk() for key in keys] + (extra or [])}), mode=0o644)


class Server:
    def __init__(self, served):
        self.served = served

    async def call(self, token: str | None, method: str = READ_METHOD) -> str:
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        answer = await self.served.channel.unary_unary(method)(b"", metadata=metadata, timeout=10)
        return answer.decode()

    async def refusal(self, token: str | None, method: str = READ_METHOD) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(token, method)
        return caught.value


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def jwks(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "jwks.json"
    _write_jwks(path, key)
    return path


@pytest.fixture
def revoked(tmp_path: Path) -> Path:
    path = tmp_path / "revoked-tokens"
    path.write_text("# revoked token ids, one a line\n")
    return path


@pytest.fixture
async def server(grpc_server, jwks: Path, revoked: Path) -> Server:
    verifier = TokenVerifier.from_files(jwks, revoked, check_interval=CHECK_INTERVAL)
    return Server(await grpc_server([_echo_binding()], verifier=verifier))


async def test_valid_tokens_reach_the_handler_with_their_principal(server: Server, key: SigningKey) -> None:
    assert await server.call(issue_token(key, "alice")) == "alice|write"
    assert await server.call(issue_token(key, "alice", scope=READ)) == "alice|read"
    assert await server.call(issue_token(key, None)) == "internal|write"


async def test_clock_skew_within_the_leeway_is_tolerated(server: Server, key: SigningKey) -> None:
    now = time.time()
    expired_just_now = issue_token(key, "alice", now=now - 70, ttl_seconds=60)  # exp 10 s ago
    valid_very_soon = issue_token(key, "alice", now=now + 10, not_before=now + 10)

    assert await server.call(expired_just_now) == "alice|write"
    assert await server.call(valid_very_soon) == "alice|write"


def _hs256_with_public_key(key: SigningKey) -> str:
    """The classic algorithm confusion: an HMAC whose secret is the verifier's public key bytes."""
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    now = int(time.time())
    claims = {"sub": "producer:alice", "scope": "write", "iss": "listboss", "aud": "listboss"}
    claims |= {"iat": now, "exp": now + 600, "jti": "confused"}
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _unsigned(key: SigningKey) -> str:
    now = int(time.time())
    claims = {"sub": "producer:alice", "scope": "write", "iss": "listboss", "aud": "listboss"}
    claims |= {"iat": now, "exp": now + 600, "jti": "unsigned"}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": key.kid})


def _tampered(key: SigningKey) -> str:
    """A valid token of alice's whose payload now says bob, signature unchanged."""
    header, payload, signature = issue_token(key, "alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "producer:bob"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _signed(key: SigningKey, **changes) -> str:
    """A token with ``changes`` to the claims a valid one has (None drops a claim)."""
    now = int(time.time())
    claims = {"sub": "producer:alice", "scope": "write", "iss": "listboss", "aud": "listboss"}
    claims |= {"iat": now, "exp": now + 600, "jti": "one-token"}
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})


REFUSED = {
    "expired": (lambda key: issue_token(key, "alice", now=time.time() - 7200), "expired"),
    "not-yet-valid": (lambda key: issue_token(key, "alice", not_before=time.time() + 600), "not yet valid"),
    "issued-in-the-future": (lambda key: issue_token(key, "alice", now=time.time() + 600), "not yet valid"),
    "wrong-audience": (lambda key: issue_token(key, "alice", audience="another-system"), "audience"),
    "wrong-issuer": (lambda key: issue_token(key, "alice", issuer="someone-else"), "issuer"),
    "unknown-kid": (lambda key: issue_token(SigningKey.generate(), "alice"), "unknown key"),
    "right-kid-other-key": (
        lambda key: issue_token(SigningKey(SigningKey.generate().private, key.kid), "alice"),
        "signature",
    ),
    "alg-none": (_unsigned, "algorithm"),
    "hs256-with-public-key": (_hs256_with_public_key, "algorithm"),
    "tampered-payload": (_tampered, "signature"),
    "missing-exp": (lambda key: _signed(key, exp=None), "required claim"),
    "missing-jti": (lambda key: _signed(key, jti=None), "required claim"),
    "unknown-scope": (lambda key: _signed(key, scope="admin"), "scope"),
    "bad-subject": (lambda key: _signed(key, sub="root"), "subject"),
    "malformed": (lambda key: "not-a-jwt", "malformed"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_bad_tokens_are_unauthenticated(server: Server, key: SigningKey, case: str) -> None:
    make, says = REFUSED[case]

    refusal = await server.refusal(make(key))

    assert refusal.code() == grpc.StatusCode.UNAUTHENTICATED
    assert says in refusal.details()
    info, _ = rich_status(refusal)
    assert info.reason == "UNAUTHENTICATED"


async def test_missing_token_is_unauthenticated(server: Server) -> None:
    assert (await server.refusal(None)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_read_token_on_a_write_method_is_denied_naming_the_scope(server: Server, key: SigningKey) -> None:
    refusal = await server.refusal(issue_token(key, "alice", scope=READ), WRITE_METHOD)

    assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "scope 'write'" in refusal.details()
    info, _ = rich_status(refusal)
    assert info.reason == "INSUFFICIENT_SCOPE"
    assert info.metadata["required_scope"] == WRITE
    assert await server.call(issue_token(key, "alice"), WRITE_METHOD) == "alice|write"


async def test_method_missing_from_the_scope_table_is_refused(server: Server, key: SigningKey) -> None:
    for token in (issue_token(key, "alice"), issue_token(key, None)):
        refusal = await server.refusal(token, UNLISTED_METHOD)
        assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
        assert rich_status(refusal)[0].reason == "METHOD_WITHOUT_SCOPE"


async def test_revoked_token_is_refused_once_listed(server: Server, key: SigningKey, revoked: Path) -> None:
    token = issue_token(key, "alice")
    other = issue_token(key, "alice")
    assert await server.call(token) == "alice|write"

    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    write_replacing(revoked, f"# leaked in a log\n{jti}  # alice's script\n\n", mode=0o644)

    async def refused() -> bool:
        try:
            await server.call(token)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in error.details()
        return False

    await eventually(refused, timeout=5, interval=CHECK_INTERVAL)
    assert await server.call(other) == "alice|write"  # only that token


async def test_rotation_two_keys_then_a_swapped_file(server: Server, key: SigningKey, jwks: Path) -> None:
    new_key = SigningKey.generate()
    _write_jwks(jwks, key, new_key)  # publish the new key beside the old

    async def accepts_new_key() -> bool:
        try:
            return await server.call(issue_token(new_key, "alice")) == "alice|write"
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

    await eventually(accepts_new_key, timeout=5, interval=CHECK_INTERVAL)
    assert await server.call(issue_token(key, "alice")) == "alice|write"  # both verify

    old_token = issue_token(key, "alice")
    _write_jwks(jwks, new_key)  # the old key retired

    async def refuses_old_key() -> bool:
        try:
            await server.call(old_token)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    await eventually(refuses_old_key, timeout=5, interval=CHECK_INTERVAL)
    assert await server.call(issue_token(new_key, "alice")) == "alice|write"


async def test_a_broken_jwks_edit_keeps_the_last_good_keys(server: Server, key: SigningKey, jwks: Path) -> None:
    write_replacing(jwks, '{"keys": [', mode=0o644)
    await asyncio.sleep(CHECK_INTERVAL * 2)  # past the check interval: the next call looks at the file

    assert await server.call(issue_token(key, "alice")) == "alice|write"


# -- key files a service refuses ------------------------------------------------------------


def _oct_jwk() -> dict:
    return {"kty": "oct", "k": base64.urlsafe_b64encode(b"0" * 32).rstrip(b"=").decode(), "kid": "shared"}


def _rsa_jwk() -> dict:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)), "kid": "rsa"}


def _ec_jwk() -> dict:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public)), "kid": "ec"}


def _private_jwk() -> dict:
    key = SigningKey.generate()
    return {**key.public_jwk(), "d": base64.urlsafe_b64encode(key.private.private_bytes_raw()).rstrip(b"=").decode()}


WEAK_JWKS = {
    "empty-file": ("", "is empty"),
    "not-json": ("keys", "not valid JSON"),
    "no-keys": ('{"keys": []}', "holds no keys"),
    "symmetric-key": (json.dumps({"keys": [_oct_jwk()]}), "symmetric"),
    "private-key": (json.dumps({"keys": [_private_jwk()]}), "private"),
    "rsa-key": (json.dumps({"keys": [_rsa_jwk()]}), "only OKP Ed25519"),
    "ec-key": (json.dumps({"keys": [_ec_jwk()]}), "only OKP Ed25519"),
    "x25519-key": (json.dumps({"keys": [{"kty": "OKP", "crv": "X25519", "x": "AA", "kid": "x"}]}), "only OKP Ed25519"),
    "no-kid": (
        json.dumps({"keys": [{k: v for k, v in SigningKey.generate().public_jwk().items() if k != "kid"}]}),
        "kid",
    ),
}


@pytest.mark.parametrize("case", WEAK_JWKS)
def test_weak_or_unclear_jwks_is_refused(tmp_path: Path, case: str) -> None:
    text, says = WEAK_JWKS[case]
    path = tmp_path / "jwks.json"
    path.write_text(text)

    with pytest.raises(ConfigError, match=says):
        TokenVerifier.from_files(path)


def test_missing_jwks_or_revocation_file_is_refused(tmp_path: Path, jwks: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TokenVerifier.from_files(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="does not exist"):
        TokenVerifier.from_files(jwks, tmp_path / "absent-revocations")


# --- verified tokens are remembered until they expire, are revoked or lose their key


def test_a_reused_token_is_checked_once_and_still_refused_when_revoked(
    jwks: Path, revoked: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier.from_files(jwks, revoked, check_interval=0)
    token = issue_token(key, "alice")
    decoded = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *args, **kwargs: decoded.append(1) or real_decode(*args, **kwargs))
    first, second = verifier.verify(f"Bearer {token}"), verifier.verify(f"Bearer {token}")
    assert first == second and first.producer == "alice"
    assert len(decoded) == 1  # the second call was answered from what the first verified
    write_replacing(revoked, f"{first.token_id}\n", mode=0o644)
    with pytest.raises(Exception, match="token revoked"):
        verifier.verify(f"Bearer {token}")


def test_a_remembered_token_expires_on_time(jwks: Path, key: SigningKey) -> None:
    verifier = TokenVerifier.from_files(jwks, check_interval=0)
    # Expired 29 s ago: still inside the 30 s leeway, for at most one more second.
    token = issue_token(key, "alice", now=time.time() - 89, ttl_seconds=60)
    assert verifier.verify(f"Bearer {token}").producer == "alice"
    time.sleep(1.1)
    with pytest.raises(Exception, match="token expired"):
        verifier.verify(f"Bearer {token}")


def test_a_remembered_token_is_refused_once_its_key_leaves_the_jwks(jwks: Path, key: SigningKey) -> None:
    verifier = TokenVerifier.from_files(jwks, check_interval=0)
    token = issue_token(key, "alice")
    assert verifier.verify(f"Bearer {token}").producer == "alice"
    _write_jwks(jwks, SigningKey.generate())  # rotated: the old key is gone
    with pytest.raises(Exception, match="unknown key"):
        verifier.verify(f"Bearer {token}")
