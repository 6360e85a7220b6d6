"""Reading the rich errors the services answer with: the ``google.rpc.Status`` in a call's
trailers, its ErrorInfo and its BadRequest field violations."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss_common.errors import ERROR_DOMAIN


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
