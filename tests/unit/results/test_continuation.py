"""Continuation tokens: what the API hands out round-trips; anything a client invents is a 400, never a 500."""

from __future__ import annotations

import pytest

from shared_code.errors import BadRequest
from shared_code.results.store import decode_continuation, encode_continuation

COSMOS_TOKEN = '{"token":"+RID:gAAEAIAAAAGoAgAAAAAAAA==#RT:1#TRC:20","range":{"min":"","max":"FF"}}'


def test_a_token_the_api_issued_round_trips() -> None:
    assert decode_continuation(encode_continuation(COSMOS_TOKEN)) == COSMOS_TOKEN


@pytest.mark.parametrize("token", [
    "PVTHlx",  # base64 of '=T\u01d7': valid UTF-8, but not a header value Cosmos could take (was a 500)
    "AAAA",  # NUL bytes
    "CQkK",  # tabs and a newline
    "!!!",  # not base64 at all
])
def test_a_token_we_never_issued_is_a_bad_request(token: str) -> None:
    with pytest.raises(BadRequest, match="invalid continuation token"):
        decode_continuation(token)
