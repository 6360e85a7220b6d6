"""``listboss-token``: prints a bearer token for a producer or for the internal role.

    listboss-token --producer alice
    listboss-token --internal

The secret is the one the services verify with: ``--secret-file`` when given,
else ``LISTBOSS_AUTH_SECRET``, else the local suite's ``var/auth-secret``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from listboss_common.auth import issue_token
from listboss_tools.suite_files import DEFAULT_DATA_DIR, SECRET_FILE_NAME

DEFAULT_SECRET_FILE = DEFAULT_DATA_DIR / SECRET_FILE_NAME
PRODUCER_PREFIX = "producers/"


class TokenError(Exception):
    pass


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="listboss-token",
        description="Print a bearer token (send it as 'authorization: Bearer <token>').",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--producer", help="the producer the token grants, e.g. alice or producers/alice")
    who.add_argument("--internal", action="store_true", help="the internal service role (every producer)")
    parser.add_argument(
        "--secret-file",
        type=Path,
        help=f"file holding the secret (default: $LISTBOSS_AUTH_SECRET, else {DEFAULT_SECRET_FILE})",
    )
    return parser.parse_args(argv)


def load_secret(secret_file: Path | None) -> str:
    """An explicit file wins over the environment, which wins over the suite's file."""
    if secret_file is None:
        from_env = os.environ.get("LISTBOSS_AUTH_SECRET", "").strip()
        if from_env:
            return from_env
        secret_file = DEFAULT_SECRET_FILE
    try:
        secret = secret_file.read_text().strip()
    except FileNotFoundError:
        raise TokenError(
            f"no secret: {secret_file} does not exist; set LISTBOSS_AUTH_SECRET or start the suite "
            "once (./dev run) to create it"
        ) from None
    if not secret:
        raise TokenError(f"{secret_file} is empty")
    return secret


def producer_id(value: str) -> str:
    """Accepts ``alice`` or the resource name ``producers/alice``."""
    producer = value.strip().removeprefix(PRODUCER_PREFIX)
    if not producer or "/" in producer:
        raise TokenError(f"invalid producer {value!r}: expected an id such as 'alice'")
    return producer


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        secret = load_secret(args.secret_file)
        producer = None if args.internal else producer_id(args.producer)
    except (TokenError, OSError) as error:
        print(f"listboss-token: {error}", file=sys.stderr)
        return 1
    print(issue_token(secret, producer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
