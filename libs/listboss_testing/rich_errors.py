"""Reading the rich errors the services answer with: the ``google.rpc.Status`` in a call's
trailers, its ErrorInfo and its BadRequest field violations."""

from __future__ import annotations

import re
from collections.abc import Awaitable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss_common.errors import ERROR_DOMAIN, MAX_MESSAGE_CHARACTERS


def rich_status(error: grpc.aio.AioRpcError | grpc.RpcError):
    """The google.rpc.Status in the error's trailers: (ErrorInfo, BadRequest or None)."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0]
    info = bad_request = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
    assert info is not None, "no ErrorInfo detail"
    assert info.domain == ERROR_DOMAIN
    return info, bad_request


def violated_fields(bad_request) -> set[str]:
    return {v.field for v in bad_request.field_violations}


async def refused_fields(call: Awaitable[object]) -> set[str]:
    """The fields an INVALID_ARGUMENT answer to ``call`` names (fails on any other answer)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(caught.value)
    return violated_fields(bad_request)


# What no answer to a caller may hold: Python's own words (a class name, a repr, a traceback).
_PYTHON_WORDS = re.compile(
    r"Error\b|Exception|Traceback|<class|object at 0x|bytearray\(|b'"
    r"|['\"](?:NoneType|dict|list|tuple|str|int|float|bool|bytes|bytearray|Mapping)['\"]"
)
#: The longest error text a test accepts: the bound listboss_common.errors keeps.
MAX_ANSWER_CHARACTERS = MAX_MESSAGE_CHARACTERS


def assert_plain_text(text: str) -> None:
    """``text`` (an error message or a field violation's description) speaks the caller's terms:
    no Python class name, repr or traceback, and bounded in size."""
    assert len(text) <= MAX_ANSWER_CHARACTERS, f"{len(text)} characters"
    found = _PYTHON_WORDS.search(text)
    assert found is None, f"{found.group()!r} in {text[:200]!r}"


def assert_plain_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> None:
    """The error's message, ErrorInfo metadata and every BadRequest description are plain
    (:func:`assert_plain_text`), and the error has its rich status."""
    assert_plain_text(error.details() or "")
    info, bad_request = rich_status(error)
    for value in info.metadata.values():
        assert len(value) <= MAX_ANSWER_CHARACTERS
    if bad_request is not None:
        for violation in bad_request.field_violations:
            assert_plain_text(violation.field)
            assert_plain_text(violation.description)
