"""The data key tests seal persons with.

One random ``LISTBOSS_DATA_KEY`` per test session: every service process a test starts
(:func:`data_key_env`) and every in-process key store (the ``person_keys`` fixture) use it,
so what one seals the others open.
"""

from __future__ import annotations

from functools import cache

from listboss_common.personal_data import DATA_KEY_ENV, Keyring, new_data_key, parse_data_key


@cache
def data_key() -> str:
    """The session's ``LISTBOSS_DATA_KEY`` value."""
    return new_data_key()


def data_key_env() -> dict[str, str]:
    """The environment a service process needs to seal and open persons."""
    return {DATA_KEY_ENV: data_key()}


def keyring() -> Keyring:
    return Keyring(parse_data_key(data_key()))
