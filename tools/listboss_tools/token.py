"""``listboss-token``: issues bearer tokens, and makes the signing keys they are issued with.

    listboss-token --producer alice                     # write scope, valid 1 h
    listboss-token --producer alice --scope read --ttl 30d
    listboss-token --internal --ttl 15m
    listboss-token keygen --out-dir keys/               # new key; its public JWK added to keys/jwks.json
    listboss-token retire --jwks keys/jwks.json --kid OLD

A token is an EdDSA JWT (see :mod:`listboss_common.auth`) signed with a private key file (PEM
or JWK): ``--key-file`` when given, else ``LISTBOSS_TOKEN_KEY_FILE``, else the local suite's
``var/signing-key.pem``. Its ``kid`` is the key's (a JWK's ``kid``, else the key's thumbprint)
unless ``--kid`` says otherwise; the services must find that kid in their JWKS file. Issuer and
audience follow ``LISTBOSS_TOKEN_ISSUER`` / ``LISTBOSS_TOKEN_AUDIENCE`` like the services'.

``keygen`` writes a new private key (``<kid>.pem``, readable by its owner only) and adds the
public half to a JWKS file; ``retire`` drops a key from it. A rotation is: keygen, publish the
JWKS with both keys, issue with the new key, and once the old key's tokens have expired, retire it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from listboss_common.auth import DEFAULT_TTL_SECONDS, SCOPES, WRITE, issue_token
from listboss_common.config import DEFAULT_TOKEN_AUDIENCE, DEFAULT_TOKEN_ISSUER, ConfigError
from listboss_common.keys import SigningKey, add_to_jwks, remove_from_jwks, write_replacing
from listboss_tools.suite_files import DEFAULT_DATA_DIR, JWKS_FILE_NAME, SIGNING_KEY_FILE_NAME

DEFAULT_KEY_FILE = DEFAULT_DATA_DIR / SIGNING_KEY_FILE_NAME
KEY_FILE_VARIABLE = "LISTBOSS_TOKEN_KEY_FILE"
PRODUCER_PREFIX = "producers/"
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(Exception):
    pass


def parse_ttl(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``30d`` (or bare seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"invalid ttl {text!r}: expected e.g. 15m, 1h or 30d")
    return int(match.group(1)) * _TTL_UNITS[match.group(2) or "s"]


def _issue_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="listboss-token",
        description="Print a bearer token (send it as 'authorization: Bearer <token>'). "
        "Subcommands: 'keygen' makes a signing key, 'retire' drops one from a JWKS file.",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--producer", help="the producer the token grants, e.g. alice or producers/alice")
    who.add_argument("--internal", action="store_true", help="the internal service role (every producer)")
    parser.add_argument(
        "--scope", choices=SCOPES, default=WRITE, help="read: list, count, export, get, watch; write: everything"
    )
    parser.add_argument(
        "--ttl", type=parse_ttl, default=DEFAULT_TTL_SECONDS, help="how long the token is valid, e.g. 15m, 1h, 30d"
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        help=f"private key, PEM or JWK (default: ${KEY_FILE_VARIABLE}, else {DEFAULT_KEY_FILE})",
    )
    parser.add_argument("--kid", help="the key id the token names (default: the key's own)")
    parser.add_argument("--issuer", default=os.environ.get("LISTBOSS_TOKEN_ISSUER") or DEFAULT_TOKEN_ISSUER)
    parser.add_argument("--audience", default=os.environ.get("LISTBOSS_TOKEN_AUDIENCE") or DEFAULT_TOKEN_AUDIENCE)
    return parser


def _keygen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="listboss-token keygen",
        description="Write a new Ed25519 signing key and add its public JWK to a JWKS file.",
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="where the private key <kid>.pem is written")
    parser.add_argument(
        "--jwks", type=Path, help=f"the JWKS file to add the public key to (default: OUT_DIR/{JWKS_FILE_NAME})"
    )
    parser.add_argument("--kid", help="the key id (default: the key's RFC 7638 thumbprint)")
    return parser


def _retire_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="listboss-token retire", description="Drop a key from a JWKS file (never its last key)."
    )
    parser.add_argument("--jwks", type=Path, required=True)
    parser.add_argument("--kid", required=True)
    return parser


def key_file(explicit: Path | None) -> Path:
    """An explicit file wins over the environment, which wins over the suite's key."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(KEY_FILE_VARIABLE, "").strip()
    return Path(from_env) if from_env else DEFAULT_KEY_FILE


def producer_id(value: str) -> str:
    """Accepts ``alice`` or the resource name ``producers/alice``."""
    producer = value.strip().removeprefix(PRODUCER_PREFIX)
    if not producer or "/" in producer:
        raise TokenError(f"invalid producer {value!r}: expected an id such as 'alice'")
    return producer


def _issue(argv: list[str]) -> str:
    args = _issue_parser().parse_args(argv)
    producer = None if args.internal else producer_id(args.producer)
    path = key_file(args.key_file)
    if not path.exists():
        raise TokenError(
            f"no signing key: {path} does not exist; pass --key-file, set {KEY_FILE_VARIABLE}, "
            "or start the suite once (./dev run) to create it"
        )
    key = SigningKey.load(path, kid=args.kid)
    return issue_token(
        key, producer, scope=args.scope, ttl_seconds=args.ttl, issuer=args.issuer, audience=args.audience
    )


def _keygen(argv: list[str]) -> str:
    args = _keygen_parser().parse_args(argv)
    key = SigningKey.generate(args.kid)
    private_file = args.out_dir / f"{key.kid}.pem"
    if private_file.exists():
        raise TokenError(f"{private_file} already exists")
    jwks = args.jwks or args.out_dir / JWKS_FILE_NAME
    write_replacing(private_file, key.pem(), mode=0o600)
    count = add_to_jwks(jwks, key.public_jwk())
    return f"kid {key.kid}: private key {private_file}; public key added to {jwks} ({count} keys)"


def _retire(argv: list[str]) -> str:
    args = _retire_parser().parse_args(argv)
    count = remove_from_jwks(args.jwks, args.kid)
    return f"kid {args.kid} dropped from {args.jwks} ({count} keys left)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = {"keygen": _keygen, "retire": _retire}.get(argv[0] if argv else "", _issue)
    if command is not _issue:
        argv = argv[1:]
    try:
        print(command(argv))
    except (TokenError, ConfigError) as error:
        print(f"listboss-token: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"listboss-token: {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
