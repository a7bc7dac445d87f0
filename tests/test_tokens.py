"""Bearer tokens as an attacker and as Better Auth present them, over HTTP to the running service.

Tokens are built here byte by byte (header and claims exactly as written, signed with real
Ed25519 keys), so that a case tests the service and not what PyJWT lets an encoder write.
Most tests run against the shared `service` on both databases. Tests of what a JWKS holds,
and the timing tests (rotation, outage, the 30 s refetch window, which depend on when a
service last fetched the JWKS, state inside its process) run against services of their own,
with JWKS servers of their own on loopback where needed. No mocks: real keys, real HTTP.
"""

import base64
import hashlib
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from conftest import (
    AUDIENCE,
    ISSUER,
    Issuer,
    database_for,
    loopback_server,
    own_token,
    public_jwk,
    running_service,
    service_environment,
    serving,
)

PROBLEM = "application/problem+json"
INVALID_TOKEN = 'Bearer error="invalid_token"'
# Every bad token gets this same answer: which check failed is not the client's to learn.
REJECTED = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "The access token is invalid or has expired.",
}
MAX_TOKEN_CHARS = 8192
JWKS_REFETCH_SECONDS = 30  # the contract: an unknown kid refetches the JWKS at most once per 30 s
ELSEWHERE = "https://evil.example"

# ---------------------------------------------------------------------------------------
# Building tokens: exact headers and claims, real signatures.
# ---------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


DROP = object()  # a claim or header value meaning "leave it out"


def claims_for(subject, /, **changes) -> dict:
    """Claims Better Auth's jwt plugin would issue for its user `subject`, with changes (DROP leaves one out)."""
    now = int(time.time())
    claims = {"sub": str(subject), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, **changes}
    return {name: value for name, value in claims.items() if value is not DROP}


def signed(claims: dict, key: Ed25519PrivateKey, **header) -> str:
    """An EdDSA JWS over exactly this header ({alg, kid} unless told otherwise; no typ) and claims."""
    header = {name: value for name, value in {"alg": "EdDSA", **header}.items() if value is not DROP}
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def issued(issuer, claims: dict, **header) -> str:
    """Signed as Better Auth signs: the issuer's current key, its kid in the header."""
    return signed(claims, issuer.keys[issuer.current_kid], **{"kid": issuer.current_kid, **header})


def hs256(claims: dict, secret: bytes, **header) -> str:
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', **header})}.{segment(claims)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def unsigned(claims: dict, alg: str, **header) -> str:
    return f"{segment({'alg': alg, **header})}.{segment(claims)}."


def public_key_secrets(public_key: Ed25519PublicKey, jwk: dict) -> dict[str, bytes]:
    """Every form of a public key an algorithm-confusion attacker might try as an HMAC secret."""
    return {
        "raw": public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        "pem": public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "jwk-x": jwk["x"].encode(),
        "jwk-json": json.dumps(jwk).encode(),
    }


def bearer(token) -> dict:
    return {"Authorization": (b"Bearer " + token) if isinstance(token, bytes) else f"Bearer {token}"}


def assert_rejected(response: httpx.Response, token) -> None:
    """The answer to a bad token: 401, invalid_token, the one problem body, and no trace of the token."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert response.json() == REJECTED
    token = token.decode("latin-1") if isinstance(token, bytes) else token
    everything_sent_back = response.text + json.dumps(list(response.headers.multi_items()))
    for part in [token, *token.split(".")]:
        if len(part) >= 8:
            assert part not in everything_sent_back


@pytest.fixture
def alices_tasks(client, alice):
    """GET alice's task list with a token: a route that answers 200 only to her."""

    def get(token) -> httpx.Response:
        return client.get(alice.tasks_url(), headers=bearer(token))

    return get


# ---------------------------------------------------------------------------------------
# Tokens that must open alice's routes.
# ---------------------------------------------------------------------------------------


def test_a_better_auth_style_token_opens_alices_routes(client, issuer, alice):
    token = issued(issuer, claims_for(alice.subject))
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": issuer.current_kid}
    me = client.get("/api/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["id"] == alice.id
    tasks = client.get(alice.tasks_url(), headers=bearer(token))
    assert tasks.status_code == 200
    assert tasks.json() == []


@pytest.mark.parametrize("audiences", [[AUDIENCE], [AUDIENCE, ELSEWHERE], [ELSEWHERE, AUDIENCE]], ids=["only-ours", "ours-first", "ours-last"])
def test_an_aud_list_holding_our_audience_is_accepted(alices_tasks, issuer, alice, audiences):
    token = issued(issuer, claims_for(alice.subject, aud=audiences))
    assert alices_tasks(token).status_code == 200


@pytest.mark.parametrize(
    "times",
    [
        lambda now: {"iat": now - 910, "exp": now - 10},
        lambda now: {"nbf": now + 10},
        lambda now: {"iat": now + 10},
    ],
    ids=["expired-10s-ago", "nbf-10s-ahead", "iat-10s-ahead"],
)
def test_a_token_within_the_clock_leeway_is_accepted(alices_tasks, issuer, alice, times):
    token = issued(issuer, claims_for(alice.subject, **times(int(time.time()))))
    assert alices_tasks(token).status_code == 200


@pytest.mark.parametrize("authorization", ["bearer {}", "BEARER {}", "Bearer  {}"], ids=["lower-case", "upper-case", "two-spaces"])
def test_the_bearer_scheme_is_read_as_rfc_6750_writes_it(client, alice, authorization):
    """The scheme is case-insensitive (RFC 7235) and may be followed by one or more spaces."""
    response = client.get(alice.tasks_url(), headers={"Authorization": authorization.format(alice.token())})
    assert response.status_code == 200


def test_the_services_own_login_token_opens_the_password_accounts_routes(client, pat):
    login = client.post("/api/auth/login", json={"email": pat.email, "password": pat.password})
    assert login.status_code == 200
    token = login.json()["access_token"]
    assert client.get("/api/me", headers=bearer(token)).json()["id"] == pat.id
    assert client.get(pat.tasks_url(), headers=bearer(token)).status_code == 200


def padded_tokens(issuer, alice) -> tuple[str, str]:
    """Two genuine tokens padded with a claim: the longest of at most 8192 characters, the shortest over."""
    tokens = [issued(issuer, claims_for(alice.subject, pad="x" * size)) for size in range(5700, 6200)]
    under = max((token for token in tokens if len(token) <= MAX_TOKEN_CHARS), key=len)
    over = min((token for token in tokens if len(token) > MAX_TOKEN_CHARS), key=len)
    assert MAX_TOKEN_CHARS - 8 < len(under) <= MAX_TOKEN_CHARS < len(over) < MAX_TOKEN_CHARS + 8
    return under, over


def test_a_genuine_token_of_up_to_8192_characters_is_accepted(alices_tasks, issuer, alice):
    under, _ = padded_tokens(issuer, alice)
    assert alices_tasks(under).status_code == 200


def test_a_genuine_token_longer_than_8192_characters_is_401(alices_tasks, issuer, alice):
    _, over = padded_tokens(issuer, alice)
    assert_rejected(alices_tasks(over), over)


# ---------------------------------------------------------------------------------------
# Genuinely signed tokens whose claims are wrong: 401, invalid_token.
# ---------------------------------------------------------------------------------------

BAD_CLAIMS = [
    ("expired", lambda now: {"iat": now - 1020, "exp": now - 120}),
    ("nbf-in-the-future", lambda now: {"nbf": now + 120}),
    ("iat-far-in-the-future", lambda now: {"iat": now + 3600, "exp": now + 4500}),
    ("wrong-iss", lambda now: {"iss": ELSEWHERE}),
    ("iss-with-a-trailing-slash", lambda now: {"iss": ISSUER + "/"}),
    ("iss-as-a-list", lambda now: {"iss": [ISSUER]}),
    ("wrong-aud", lambda now: {"aud": ELSEWHERE}),
    ("aud-list-without-ours", lambda now: {"aud": [ELSEWHERE, "another-api"]}),
    ("aud-empty-list", lambda now: {"aud": []}),
    ("missing-exp", lambda now: {"exp": DROP}),
    ("missing-iss", lambda now: {"iss": DROP}),
    ("missing-aud", lambda now: {"aud": DROP}),
    ("missing-sub", lambda now: {"sub": DROP}),
    ("exp-null", lambda now: {"exp": None}),
    ("exp-numeric-string", lambda now: {"exp": str(now + 900)}),
    ("exp-boolean", lambda now: {"exp": True}),
    ("exp-nan", lambda now: {"exp": float("nan")}),
    ("exp-infinity", lambda now: {"exp": float("inf")}),
    ("nbf-numeric-string", lambda now: {"nbf": str(now - 60)}),
    ("iat-numeric-string", lambda now: {"iat": str(now)}),
    ("sub-empty", lambda now: {"sub": ""}),
    ("sub-a-json-number", lambda now: {"sub": 1}),
    ("sub-null", lambda now: {"sub": None}),
    ("sub-a-list", lambda now: {"sub": ["1"]}),
    ("sub-over-255-characters", lambda now: {"sub": "a" * 256}),
    ("sub-with-a-nul", lambda now: {"sub": "alice\u0000"}),
    ("sub-a-lone-surrogate", lambda now: {"sub": "\ud800"}),
]
@pytest.mark.parametrize("changes", [case for _, case in BAD_CLAIMS], ids=[name for name, _ in BAD_CLAIMS])
def test_a_genuinely_signed_token_with_a_bad_claim_is_401(alices_tasks, issuer, alice, changes):
    claims = claims_for(alice.subject, **changes(int(time.time())))
    token = issued(issuer, claims)
    assert_rejected(alices_tasks(token), token)


# The service's own tokens name a backend user id: decimal, 1 to 2**63 - 1, nothing else.
NOT_A_USER_ID = [
    ("non-numeric", "pat"),
    ("zero", "0"),
    ("leading-zero", "01"),
    ("negative", "-1"),
    ("2-to-the-63", str(2**63)),
    ("20-digits", "1" * 20),
    ("with-spaces", " {id} "),
    ("with-a-plus", "+{id}"),
    ("decimal", "{id}.0"),
    ("exponent", "1e3"),
    ("arabic-indic-digits", "\u0661\u0662"),
    ("with-a-newline", "{id}\n"),
]


@pytest.mark.parametrize("subject", [case for _, case in NOT_A_USER_ID], ids=[name for name, _ in NOT_A_USER_ID])
def test_the_services_own_token_whose_sub_is_not_a_user_id_is_401(client, pat, subject):
    token = own_token(subject.format(id=pat.id))
    assert_rejected(client.get(pat.tasks_url(), headers=bearer(token)), token)


# ---------------------------------------------------------------------------------------
# Tokens not signed by a trusted key, or not the way a trusted key signs.
# ---------------------------------------------------------------------------------------


def issuer_secrets(issuer) -> dict[str, bytes]:
    key = issuer.keys[issuer.current_kid]
    return public_key_secrets(key.public_key(), public_jwk(key, issuer.current_kid))


def tampered(token: str, claims: dict) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{segment(claims)}.{signature}"


def attacker_ec_token(claims, kid):
    return jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid})


def attacker_rsa_token(claims, kid):
    return jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256", headers={"kid": kid})


FORGERIES = [
    ("alg-none", lambda issuer, claims: unsigned(claims, "none", kid=issuer.current_kid)),
    ("alg-None", lambda issuer, claims: unsigned(claims, "None", kid=issuer.current_kid)),
    ("alg-NONE", lambda issuer, claims: unsigned(claims, "NONE", kid=issuer.current_kid)),
    ("alg-missing", lambda issuer, claims: issued(issuer, claims, alg=DROP)),
    ("alg-null", lambda issuer, claims: issued(issuer, claims, alg=None)),
    ("alg-none-with-a-real-signature", lambda issuer, claims: issued(issuer, claims, alg="none")),
    *[
        (f"hs256-with-the-public-key-{form}", lambda issuer, claims, form=form: hs256(claims, issuer_secrets(issuer)[form], kid=issuer.current_kid))
        for form in ("raw", "pem", "der", "jwk-x", "jwk-json")
    ],
    ("es256-attacker-key-under-a-known-kid", lambda issuer, claims: attacker_ec_token(claims, issuer.current_kid)),
    ("rs256-attacker-key-under-a-known-kid", lambda issuer, claims: attacker_rsa_token(claims, issuer.current_kid)),
    ("foreign-ed25519-key-under-a-known-kid", lambda issuer, claims: signed(claims, Ed25519PrivateKey.generate(), kid=issuer.current_kid)),
    ("tampered-payload", lambda issuer, claims: tampered(issued(issuer, claims), {**claims, "sub": claims["sub"] + "x"})),
    ("tampered-expiry", lambda issuer, claims: tampered(issued(issuer, {**claims, "exp": claims["exp"] - 3600}), claims)),
    ("signature-stripped", lambda issuer, claims: issued(issuer, claims).rpartition(".")[0] + "."),
    ("signature-truncated", lambda issuer, claims: issued(issuer, claims)[:-4]),
    ("unknown-kid", lambda issuer, claims: signed(claims, Ed25519PrivateKey.generate(), kid=uuid.uuid4().hex)),
    ("missing-kid", lambda issuer, claims: signed(claims, Ed25519PrivateKey.generate())),
    ("empty-kid", lambda issuer, claims: signed(claims, Ed25519PrivateKey.generate(), kid="")),
    ("unsupported-critical-header", lambda issuer, claims: issued(issuer, claims, crit=["exp"], exp=1)),
    ("unencoded-payload-b64-false", lambda issuer, claims: issued(issuer, claims, b64=False, crit=["b64"])),
]


@pytest.mark.parametrize("forge", [case for _, case in FORGERIES], ids=[name for name, _ in FORGERIES])
def test_a_token_not_signed_by_a_trusted_key_is_401(alices_tasks, issuer, alice, forge):
    token = forge(issuer, claims_for(alice.subject))
    assert_rejected(alices_tasks(token), token)


def test_a_token_signed_by_another_key_under_the_services_own_kid_is_401(client, alices_tasks, alice):
    [own] = client.get("/api/auth/jwks").json()["keys"]
    token = signed(claims_for(alice.subject), Ed25519PrivateKey.generate(), kid=own["kid"])
    assert_rejected(alices_tasks(token), token)


def test_a_token_signed_by_better_auths_key_under_the_services_own_kid_is_401(client, alices_tasks, issuer, alice):
    [own] = client.get("/api/auth/jwks").json()["keys"]
    token = issued(issuer, claims_for(alice.subject), kid=own["kid"])
    assert_rejected(alices_tasks(token), token)


@pytest.mark.parametrize("form", ["raw", "pem", "der", "jwk-x", "jwk-json"])
def test_hs256_signed_with_the_services_own_public_key_is_401(client, alices_tasks, alice, form):
    [own] = client.get("/api/auth/jwks").json()["keys"]
    public_key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(own["x"] + "=="))
    token = hs256(claims_for(alice.subject), public_key_secrets(public_key, own)[form], kid=own["kid"])
    assert_rejected(alices_tasks(token), token)


# ---------------------------------------------------------------------------------------
# Strings that are not tokens at all, and Authorization headers that are not Bearer.
# ---------------------------------------------------------------------------------------

GARBAGE = [
    ("a-word", "garbage"),
    ("three-dots-apart", "a.b.c"),
    ("only-dots", "..."),
    ("two-dots", ".."),
    ("one-segment", segment({"alg": "EdDSA", "kid": "k"})),
    ("five-segments-like-a-jwe", "a.b.c.d.e"),
    ("not-base64url", "!!!!.@@@@.####"),
    ("header-not-json", b64(b"{") + ".e30.c2ln"),
    ("header-a-json-list", segment([]) + ".e30.c2ln"),
    ("header-a-json-string", segment("EdDSA") + ".e30.c2ln"),
    ("header-deeply-nested", b64(b"[" * 5000) + ".e30.c2ln"),
    ("header-a-5000-digit-number", b64(b'{"alg":"EdDSA","kid":' + b"9" * 5000 + b"}") + ".e30.c2ln"),
    ("kid-a-number", segment({"alg": "EdDSA", "kid": 1}) + ".e30.c2ln"),
    ("kid-an-object", segment({"alg": "EdDSA", "kid": {"a": 1}}) + ".e30.c2ln"),
    ("kid-a-list", segment({"alg": "EdDSA", "kid": ["a"]}) + ".e30.c2ln"),
    ("alg-an-object", segment({"alg": {"a": 1}, "kid": "k"}) + ".e30.c2ln"),
    ("a-space-inside", "eyJhbGciOiJFZERTQSJ9 .e30.c2ln"),
    ("latin-1-bytes", b"\xff\xfe.\xfd\xfc.\xfb"),
    ("a-json-object", '{"sub":"1"}'),
]


@pytest.mark.parametrize("token", [value for _, value in GARBAGE], ids=[name for name, _ in GARBAGE])
def test_a_garbage_token_is_401(alices_tasks, token):
    assert_rejected(alices_tasks(token), token)


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQtMQ==",
        "Basic {token}",
        "Token {token}",
        "{token}",
        "Bearer",
        "Bearer {token} {token}",
        "Bearer {token}.",
    ],
    ids=["basic-credentials", "basic-with-a-valid-jwt", "token-scheme-with-a-valid-jwt", "a-valid-jwt-without-a-scheme", "bearer-alone", "two-tokens", "a-dot-too-many"],
)
def test_an_authorization_header_that_is_not_bearer_and_one_token_is_401(client, alice, authorization):
    token = alice.token()
    response = client.get(alice.tasks_url(), headers={"Authorization": authorization.format(token=token)})
    assert_rejected(response, token)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api/auth/login", 200),
        ("POST", "/api/auth/signup", 201),
        ("GET", "/api/auth/jwks", 200),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/no/such/route", 404),
    ],
)
def test_an_expired_token_sent_to_a_route_that_needs_none_is_ignored(client, issuer, pat, method, path, status):
    """A frontend that sends its stored token with every request can still log in once it expires."""
    token = own_token(pat.id, exp=int(time.time()) - 3600)
    email = pat.email if path.endswith("login") else f"{uuid.uuid4().hex}@example.com"
    body = {"email": email, "password": pat.password} if method == "POST" else None
    response = client.request(method, path, json=body, headers=bearer(token))
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/{id}/tasks"), ("POST", "/api/{id}/tasks"), ("GET", "/api/{id}/tasks/1"), ("DELETE", "/api/{id}/tasks/1"), ("GET", "/api/me")],
    ids=["list", "create", "read", "delete", "me"],
)
def test_a_signed_in_route_without_a_token_is_401_asking_for_a_bearer_token(client, alice, method, path):
    response = client.request(method, path.format(id=alice.id), json={"title": "t"} if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == 401 and body["title"] == "Unauthorized"


# ---------------------------------------------------------------------------------------
# Keys named inside a token (jku, x5u, jwk, x5c) are never fetched or used.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker_server():
    """A second loopback server serving the attacker's own JWKS; it records every request it gets."""
    key, kid, requests = Ed25519PrivateKey.generate(), f"attacker-{uuid.uuid4().hex}", []

    def answer(path):
        requests.append(path)
        return 200, json.dumps({"keys": [public_jwk(key, kid)]}).encode()

    with loopback_server(answer) as url:
        yield SimpleNamespace(key=key, kid=kid, url=url, requests=requests, certificate=self_signed_certificate(key))


@pytest.fixture
def attacker(attacker_server):
    """The attacker's server, checked to answer (so a request from the service would be seen), its record cleared."""
    assert httpx.get(f"{attacker_server.url}/check").json()["keys"][0]["kid"] == attacker_server.kid
    attacker_server.requests.clear()
    return attacker_server


def self_signed_certificate(key: Ed25519PrivateKey) -> str:
    """The attacker's key in a self-signed X.509 certificate, base64 DER as x5c carries it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, None)
    )
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


EMBEDDED_KEYS = [
    ("jku-with-the-attackers-kid", lambda attacker, issuer: {"kid": attacker.kid, "jku": f"{attacker.url}/jwks"}),
    ("jku-with-a-known-kid", lambda attacker, issuer: {"kid": issuer.current_kid, "jku": f"{attacker.url}/jwks"}),
    ("jku-without-kid", lambda attacker, issuer: {"jku": f"{attacker.url}/jwks"}),
    ("x5u-with-the-attackers-kid", lambda attacker, issuer: {"kid": attacker.kid, "x5u": f"{attacker.url}/cert.pem"}),
    ("x5u-with-a-known-kid", lambda attacker, issuer: {"kid": issuer.current_kid, "x5u": f"{attacker.url}/cert.pem"}),
    ("jwk-with-the-attackers-kid", lambda attacker, issuer: {"kid": attacker.kid, "jwk": public_jwk(attacker.key, attacker.kid)}),
    ("jwk-with-a-known-kid", lambda attacker, issuer: {"kid": issuer.current_kid, "jwk": public_jwk(attacker.key, issuer.current_kid)}),
    ("jwk-without-kid", lambda attacker, issuer: {"jwk": public_jwk(attacker.key, attacker.kid)}),
    ("x5c-with-a-known-kid", lambda attacker, issuer: {"kid": issuer.current_kid, "x5c": [attacker.certificate]}),
    ("kid-is-the-attackers-jwks-url", lambda attacker, issuer: {"kid": f"{attacker.url}/jwks"}),
]


@pytest.mark.parametrize("header", [case for _, case in EMBEDDED_KEYS], ids=[name for name, _ in EMBEDDED_KEYS])
def test_a_key_named_inside_the_token_is_never_fetched_nor_trusted(alices_tasks, issuer, alice, attacker, header):
    token = signed(claims_for(alice.subject), attacker.key, **header(attacker, issuer))
    assert_rejected(alices_tasks(token), token)
    time.sleep(0.1)  # a fetch started alongside the answer would have arrived by now
    assert attacker.requests == []


# ---------------------------------------------------------------------------------------
# What the JWKS holds: only public signing keys of an allowed algorithm are trusted, and an
# entry the service cannot read is skipped. These run on SQLite only: the JWKS cache is the
# same whatever the database.
# ---------------------------------------------------------------------------------------


@contextmanager
def service_with_jwks(directory, jwks_url):
    """A service of its own on SQLite, trusting this JWKS URL, with one user (`user_id`)."""
    directory.mkdir()
    with database_for("sqlite", directory) as database_url:
        env = service_environment(database_url, SimpleNamespace(jwks_url=jwks_url))
        with running_service(env, directory / "service.log") as running:
            signup = httpx.post(f"{running.url}/api/auth/signup", json={"email": "jwks@example.com", "password": "a-good-password"})
            running.user_id = signup.json()["id"]
            yield running


def unusable_keys() -> dict[str, tuple[dict, object]]:
    """JWKS entries the service must not trust, each with a token that the key behind it would sign."""
    secret, private, rsa_key = b"a-shared-secret-of-32-bytes-long", Ed25519PrivateKey.generate(), rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return {
        "hmac-secret": ({"kty": "oct", "k": b64(secret), "kid": "hmac", "alg": "HS256"}, lambda claims: hs256(claims, secret, kid="hmac")),
        "private-key-published": ({**public_jwk(private, "private"), "d": b64(private_raw)}, lambda claims: signed(claims, private, kid="private")),
        "encryption-key": ({**public_jwk(private, "encryption"), "use": "enc"}, lambda claims: signed(claims, private, kid="encryption")),
        "rsa-key-outside-the-allow-list": (
            {**jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa", "alg": "RS256"},
            lambda claims: jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa"}),
        ),
        "ed25519-key-labelled-es256": ({**public_jwk(private, "mislabelled"), "alg": "ES256"}, lambda claims: signed(claims, private, kid="mislabelled")),
    }


UNUSABLE = list(unusable_keys())


@pytest.fixture(scope="module")
def mixed_jwks(tmp_path_factory):
    """A service whose JWKS holds one good Ed25519 key beside every entry of unusable_keys()."""
    good, unusable = Ed25519PrivateKey.generate(), unusable_keys()
    document = {"keys": [public_jwk(good, "good"), *(entry for entry, _ in unusable.values())]}
    with loopback_server(lambda path: (200, json.dumps(document).encode())) as url:
        with service_with_jwks(tmp_path_factory.mktemp("mixed-jwks") / "service", f"{url}/jwks") as running:
            yield SimpleNamespace(service=running, good=good, tokens={name: token for name, (_, token) in unusable.items()})


def test_the_usable_key_of_a_jwks_is_trusted_beside_keys_that_are_not(mixed_jwks):
    token = signed(claims_for(mixed_jwks.service.user_id), mixed_jwks.good, kid="good")
    assert httpx.get(f"{mixed_jwks.service.url}/api/me", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("entry", UNUSABLE)
def test_a_jwks_entry_that_is_no_public_signing_key_of_an_allowed_algorithm_is_never_trusted(mixed_jwks, entry):
    token = mixed_jwks.tokens[entry](claims_for(mixed_jwks.service.user_id))
    assert_rejected(httpx.get(f"{mixed_jwks.service.url}/api/me", headers=bearer(token)), token)


# An entry PyJWT cannot even read: `alg` as a list makes jwt.PyJWK raise TypeError, not a PyJWTError.
MALFORMED_ENTRY = {"kty": "OKP", "crv": "Ed25519", "x": b64(bytes(32)), "kid": "malformed", "alg": ["EdDSA"]}


def test_a_malformed_jwks_entry_does_not_stop_the_service_from_starting(tmp_path):
    good = Ed25519PrivateKey.generate()
    document = {"keys": [MALFORMED_ENTRY, public_jwk(good, "good")]}
    with loopback_server(lambda path: (200, json.dumps(document).encode())) as url, ExitStack() as stack:
        try:
            running = stack.enter_context(service_with_jwks(tmp_path / "service", f"{url}/jwks"))
        except RuntimeError as exc:
            pytest.fail(f"the service did not start with a malformed JWKS entry: {str(exc).strip().splitlines()[-1]}")
        token = signed(claims_for(running.user_id), good, kid="good")
        assert httpx.get(f"{running.url}/api/me", headers=bearer(token)).status_code == 200


def test_a_malformed_jwks_entry_fetched_for_a_request_is_skipped_not_a_500(tmp_path):
    """Better Auth serves no key when the service starts (so the first token fetches), then a malformed one beside a good one."""
    good, served = Ed25519PrivateKey.generate(), {"body": b'{"keys": []}'}
    with loopback_server(lambda path: (200, served["body"])) as url:
        with service_with_jwks(tmp_path / "service", f"{url}/jwks") as running:
            served["body"] = json.dumps({"keys": [MALFORMED_ENTRY, public_jwk(good, "good")]}).encode()
            token = signed(claims_for(running.user_id), good, kid="good")
            response = httpx.get(f"{running.url}/api/me", headers=bearer(token))
    assert response.status_code == 200, response.text


def test_a_jwks_document_too_deeply_nested_to_read_is_a_failed_fetch_not_a_500(tmp_path):
    """json.loads raises RecursionError, which is no ValueError, on 100,000 nested arrays."""
    served = {"body": b'{"keys": []}'}
    with loopback_server(lambda path: (200, served["body"])) as url:
        with service_with_jwks(tmp_path / "service", f"{url}/jwks") as running:
            served["body"] = b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            token = signed(claims_for(running.user_id), Ed25519PrivateKey.generate(), kid="new")
            response = httpx.get(f"{running.url}/api/me", headers=bearer(token))
    assert_rejected(response, token)


# ---------------------------------------------------------------------------------------
# The JWKS refetch window, on a service whose last fetch is known: its own start-up.
# ---------------------------------------------------------------------------------------


def foreign_token() -> str:
    return signed(claims_for(1), Ed25519PrivateKey.generate(), kid=uuid.uuid4().hex)


def send_all(url: str, tokens: list[str]) -> list[int]:
    """GET /api/me with each token, all at once; the statuses in the tokens' order."""
    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        return list(pool.map(lambda token: httpx.get(f"{url}/api/me", headers=bearer(token), timeout=30).status_code, tokens))


def test_a_burst_of_unknown_kids_fetches_the_jwks_at_most_once_in_30_seconds(start_service, issuer):
    """The service's start-up fetch opens the window; 40 unknown kids within it fetch nothing more."""
    before = issuer.fetches
    with start_service() as fresh:
        started = time.monotonic()
        statuses = send_all(fresh.url, [foreign_token() for _ in range(40)])
        assert time.monotonic() - started < JWKS_REFETCH_SECONDS  # still inside the window
    assert statuses == [401] * 40
    assert issuer.fetches - before == 1


# ---------------------------------------------------------------------------------------
# Rotation and outage: one timeline, three services, one 30 s wait.
#
# A service fetches the JWKS when it starts and then refetches for an unknown kid at most
# once per 30 s, so whatever a rotation or an outage changes is seen only 30 s after its
# last fetch. Three services share one wait on SQLite (the JWKS cache is the same whatever
# the database): `rotating` and `outage` start knowing the issuer's keys A and D, and
# `rotating` accepts one token signed with D; then the issuer rotates to B (A still
# published) and goes down, and `recovering` starts during the outage, knowing no key.
# After the wait, `outage` tries to refetch while the issuer is still down; then the issuer
# comes back without D, and `recovering` and `rotating` refetch. Each test below
# checks one observation of this timeline. `rotating` reaches the JWKS through a relay that
# answers after half a second, as a distant Better Auth might, so that its burst of
# requests arrives while its one fetch is still under way. The timeline has an issuer of its
# own and runs in a thread from the module's first test on, so that the rest of the run goes
# on through its wait.
# ---------------------------------------------------------------------------------------


def slow_relay(stack: ExitStack, issuer, delay: float) -> str:
    """A JWKS URL that waits `delay` seconds, then relays the issuer's answer; closed with the stack."""

    def answer(path):
        time.sleep(delay)
        relayed = httpx.get(issuer.jwks_url)
        return relayed.status_code, relayed.content

    return stack.enter_context(loopback_server(answer)) + "/api/auth/jwks"


class Seen(SimpleNamespace):
    """One request of the timeline: the answer, and how many JWKS fetches it caused."""


def ask(service, issuer, token) -> Seen:
    before = issuer.fetches
    response = httpx.get(f"{service.url}/api/me", headers=bearer(token), timeout=30)
    return Seen(
        status=response.status_code,
        content_type=response.headers.get("content-type"),
        www_authenticate=response.headers.get("www-authenticate"),
        body=response.json(),
        fetches=issuer.fetches - before,
    )


def run_timeline(directory) -> dict[str, Seen]:
    """The timeline, with an issuer of its own (it rotates keys and goes down, which the rest of
    the run must not see): about 35 s, nearly all of it the wait."""
    seen = {}

    def start(stack, name, **overrides):
        """A service of its own, with one user; `user_id` is her id."""
        (directory / name).mkdir()
        database_url = stack.enter_context(database_for("sqlite", directory / name))
        env = service_environment(database_url, issuer, **overrides)
        running = stack.enter_context(running_service(env, directory / name / "service.log"))
        signup = httpx.post(f"{running.url}/api/auth/signup", json={"email": f"{name}@example.com", "password": "a-good-password"})
        running.user_id = signup.json()["id"]
        return running

    def token_a(service):
        return signed(claims_for(service.user_id), issuer.keys[old_kid], kid=old_kid)

    def token_b(service):
        return signed(claims_for(service.user_id), issuer.keys[new_kid], kid=new_kid)

    with ExitStack() as stack:
        issuer = stack.enter_context(serving(Issuer()))
        old_kid = issuer.current_kid
        dropped_kid = uuid.uuid4().hex
        issuer.keys[dropped_kid] = Ed25519PrivateKey.generate()
        rotating = start(stack, "rotating", JWKS_URL=slow_relay(stack, issuer, delay=0.5))
        token_d = signed(claims_for(rotating.user_id), issuer.keys[dropped_kid], kid=dropped_kid)
        seen["rotating: D while published"] = ask(rotating, issuer, token_d)
        # expired 27 s ago: inside the 30 s clock leeway now, outside it after the wait
        token_expiring = signed(claims_for(rotating.user_id, exp=int(time.time()) - 27), issuer.keys[old_kid], kid=old_kid)
        seen["rotating: a token in its last seconds"] = ask(rotating, issuer, token_expiring)
        outage = start(stack, "outage")
        new_kid = issuer.rotate()  # A stays published beside B
        issuer.up = False
        recovering = start(stack, "recovering")
        seen["recovering: B during the outage"] = ask(recovering, issuer, token_b(recovering))
        last_fetch = time.monotonic()
        seen["outage: A during the outage"] = ask(outage, issuer, token_a(outage))
        seen["rotating: B within 30 s of its fetch"] = ask(rotating, issuer, token_b(rotating))

        time.sleep(max(0.0, last_fetch + JWKS_REFETCH_SECONDS + 1 - time.monotonic()))
        seen["rotating: the same token once expired"] = ask(rotating, issuer, token_expiring)

        seen["outage: B after 30 s, issuer still down"] = ask(outage, issuer, token_b(outage))
        seen["outage: A after its failed refetch"] = ask(outage, issuer, token_a(outage))
        issuer.up = True
        del issuer.keys[dropped_kid]
        seen["recovering: B after 30 s, issuer back"] = ask(recovering, issuer, token_b(recovering))
        before = issuer.fetches
        burst = [token_b(rotating), *(foreign_token() for _ in range(19))]
        seen["rotating: burst after 30 s"] = Seen(statuses=send_all(rotating.url, burst), fetches=issuer.fetches - before)
        seen["rotating: A after the refetch"] = ask(rotating, issuer, token_a(rotating))
        seen["rotating: the same D token after a refetch without D"] = ask(rotating, issuer, token_d)
        seen["outage: B within 30 s of its failed refetch"] = ask(outage, issuer, token_b(outage))
    return seen


@pytest.fixture(scope="session")
def timeline_running(tmp_path_factory):
    """The timeline, run in a thread of its own: its 30 s wait passes while other tests run."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        yield thread.submit(run_timeline, tmp_path_factory.mktemp("jwks-timeline"))


@pytest.fixture(scope="module", autouse=True)
def timeline_started_early(request):
    """Start the timeline at this module's first test, when a test of it is selected: its
    own tests come last in the run (they take no database), and the wait is over by then."""
    if any("timeline" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("timeline_running")


@pytest.fixture
def timeline(timeline_running) -> dict[str, Seen]:
    """What the timeline saw (once it is over)."""
    return timeline_running.result()


def assert_seen_rejected(seen: Seen) -> None:
    assert (seen.status, seen.content_type, seen.www_authenticate, seen.body) == (401, PROBLEM, INVALID_TOKEN, REJECTED)


def test_during_a_jwks_outage_a_known_key_keeps_working(timeline):
    assert timeline["outage: A during the outage"].status == 200


def test_during_a_jwks_outage_a_known_key_survives_a_failed_refetch(timeline):
    assert timeline["outage: B after 30 s, issuer still down"].fetches == 1  # it did try, and failed
    assert timeline["outage: A after its failed refetch"].status == 200


def test_during_a_jwks_outage_a_new_kid_is_401_not_500(timeline):
    assert_seen_rejected(timeline["outage: B after 30 s, issuer still down"])


def test_a_service_started_during_a_jwks_outage_answers_401_not_500(timeline):
    assert_seen_rejected(timeline["recovering: B during the outage"])


def test_when_the_jwks_is_back_and_30_seconds_have_passed_the_new_key_is_accepted(timeline):
    seen = timeline["recovering: B after 30 s, issuer back"]
    assert (seen.status, seen.fetches) == (200, 1)


def test_after_a_rotation_a_token_with_the_new_kid_is_accepted_once_30_seconds_have_passed(timeline):
    assert timeline["rotating: burst after 30 s"].statuses[0] == 200


def test_after_a_rotation_the_old_key_keeps_working_while_still_published(timeline):
    seen = timeline["rotating: A after the refetch"]
    assert (seen.status, seen.fetches) == (200, 0)


def test_a_token_accepted_before_its_key_was_dropped_is_401_once_the_jwks_is_refetched(timeline):
    """Accepted tokens are remembered, but never past the key that verified them."""
    assert timeline["rotating: D while published"].status == 200
    seen = timeline["rotating: the same D token after a refetch without D"]
    assert seen.fetches == 0
    assert_seen_rejected(seen)


def test_a_token_accepted_before_it_expired_is_401_after(timeline):
    assert timeline["rotating: a token in its last seconds"].status == 200
    assert_seen_rejected(timeline["rotating: the same token once expired"])


def test_within_30_seconds_of_a_fetch_a_new_kid_does_not_refetch(timeline):
    seen = timeline["rotating: B within 30 s of its fetch"]
    assert seen.fetches == 0
    assert_seen_rejected(seen)


def test_a_concurrent_burst_of_unknown_kids_after_30_seconds_fetches_the_jwks_once(timeline):
    seen = timeline["rotating: burst after 30 s"]
    assert seen.fetches == 1
    assert seen.statuses[1:] == [401] * 19


def test_a_failed_refetch_also_waits_30_seconds_before_the_next(timeline):
    seen = timeline["outage: B within 30 s of its failed refetch"]
    assert seen.fetches == 0
    assert_seen_rejected(seen)
