"""The identity core without servers: local tokens, API key format and hashing, key scopes, rate limits."""

from __future__ import annotations

import time

import jwt
import pytest

from shared_code.errors import BadRequest, Forbidden, RateLimited, Unauthorized
from shared_code.identity.api_keys import format_key, grantable_scopes, hash_secret, parse_key
from shared_code.identity.auth import ALL_SCOPES, DEFAULT_USER_SCOPES, Principal, authenticate, issue_token
from shared_code.identity.rate_limit import TokenBucketLimiter
from shared_code.settings import Settings

pytestmark = pytest.mark.unit
KEY = "unit-test-signing-key-0123456789abcdef-xyz"


@pytest.fixture
def settings() -> Settings:
    return Settings(AUTH_MODE="local", AUTH_SIGNING_KEY=KEY, COSMOS_KEY="", STORAGE_CONNECTION_STRING="")


def header(token: str) -> str:
    return f"Bearer {token}"


def test_issued_tokens_authenticate_with_their_scopes_and_key_id(settings: Settings) -> None:
    plain = authenticate(settings, header(issue_token(settings, "alice")))
    assert plain == Principal("alice", frozenset(DEFAULT_USER_SCOPES))
    assert not plain.via_api_key
    keyed = authenticate(settings, header(issue_token(settings, "bob", ("classify",), 5, key_id="0123456789abcdef")))
    assert keyed.key_id == "0123456789abcdef" and keyed.scopes == {"classify"} and keyed.via_api_key


def test_scopes_come_from_scope_scp_and_roles_and_unknown_ones_are_dropped(settings: Settings) -> None:
    now = int(time.time())
    claims = {"iss": settings.AUTH_ISSUER, "aud": settings.AUTH_AUDIENCE, "sub": "u", "iat": now, "nbf": now,
              "exp": now + 60, "scp": "classify superuser", "roles": ["results:read", "root"], "scope": "results:write"}
    principal = authenticate(settings, header(jwt.encode(claims, KEY, algorithm="HS256")))
    assert principal.scopes == {"classify", "results:read", "results:write"}


def test_admin_scope_satisfies_every_scope_check() -> None:
    Principal("a", frozenset({"admin"})).require("results:write")
    with pytest.raises(Forbidden):
        Principal("a", frozenset({"classify"})).require("results:write")


def test_tokens_longer_lived_than_the_service_issues_are_refused(settings: Settings) -> None:
    now = int(time.time())
    claims = {"iss": settings.AUTH_ISSUER, "aud": settings.AUTH_AUDIENCE, "sub": "u", "iat": now, "nbf": now,
              "exp": now + 25 * 3600}
    with pytest.raises(Unauthorized):
        authenticate(settings, header(jwt.encode(claims, KEY, algorithm="HS256")))


def test_entra_mode_never_issues_local_tokens() -> None:
    tenant, client_id = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    entra = Settings(AUTH_MODE="entra", AUTH_ISSUER=f"https://login.microsoftonline.com/{tenant}/v2.0",
                     AUTH_AUDIENCE=client_id, AUTH_JWKS_URL=f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys",
                     COSMOS_KEY="", STORAGE_CONNECTION_STRING="")
    with pytest.raises(Forbidden):
        issue_token(entra, "alice")


def test_api_keys_round_trip_and_reject_every_malformed_variant() -> None:
    text = format_key("alice@example.com", "0123456789abcdef", "ab" * 32)
    assert parse_key(text) == ("alice@example.com", "0123456789abcdef", "ab" * 32)
    owner_hex = b"bob".hex()
    for bad in ("", "ick", text + "0", text.upper(), text.replace("ick_", "ikk_"),
                f"ick_{owner_hex}_0123456789abcdef_{'ab' * 31}", f"ick_zz_0123456789abcdef_{'ab' * 32}",
                f"ick_{b'../x'.hex()}_0123456789abcdef_{'ab' * 32}", f"ick_ff_0123456789abcdef_{'ab' * 32}"):
        with pytest.raises(Unauthorized):
            parse_key(bad)


def test_secret_hashes_depend_on_the_salt() -> None:
    assert hash_secret(b"salt-one", "s") != hash_secret(b"salt-two", "s")
    assert hash_secret(b"salt-one", "s") == hash_secret(b"salt-one", "s")
    assert len(hash_secret(b"x", "s")) == 64


@pytest.mark.parametrize(("held", "requested", "expected"), [
    (DEFAULT_USER_SCOPES, None, list(DEFAULT_USER_SCOPES)),
    (ALL_SCOPES, None, list(DEFAULT_USER_SCOPES)),
    (("admin",), ["admin", "classify"], ["classify", "admin"]),
    (("classify", "results:read"), ["results:read"], ["results:read"]),
])
def test_key_scopes_are_a_subset_of_the_callers(held: tuple[str, ...], requested: list[str] | None,
                                                 expected: list[str]) -> None:
    assert grantable_scopes(Principal("u", frozenset(held)), requested) == expected


@pytest.mark.parametrize(("held", "requested", "error"), [
    (("classify",), ["results:read"], Forbidden),
    (DEFAULT_USER_SCOPES, ["admin"], Forbidden),
    ((), None, Forbidden),
    (("classify",), [], BadRequest),
    (("admin",), ["everything"], BadRequest),
])
def test_keys_cannot_escalate(held: tuple[str, ...], requested: list[str] | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        grantable_scopes(Principal("u", frozenset(held)), requested)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.wait_seconds("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_seconds("u") == pytest.approx(1.0)
    with pytest.raises(RateLimited) as refused:
        limiter.check("u")
    assert refused.value.retry_after_s == 1 and refused.value.status_code == 429
    assert limiter.wait_seconds("v") == 0.0  # buckets are per subject
    clock.now += 1.0
    assert limiter.wait_seconds("u") == 0.0
    assert limiter.wait_seconds("u") > 0
    clock.now += 60.0
    assert [limiter.wait_seconds("u") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refill stops at the burst


def test_token_bucket_memory_is_bounded_and_zero_rate_disables_it() -> None:
    limiter = TokenBucketLimiter(per_minute=1, burst=1, max_subjects=100, clock=FakeClock())
    for index in range(1000):
        limiter.wait_seconds(f"user-{index}")
    assert len(limiter._buckets) == 100
    off = TokenBucketLimiter(per_minute=0, burst=1)
    assert not off.enabled and all(off.wait_seconds("u") == 0.0 for _ in range(100))
