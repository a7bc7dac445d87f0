"""Signup, login, the service's own tokens and its JWKS, and /api/me."""

import jwt
import pytest

from conftest import AUDIENCE, ISSUER, own_token

PROBLEM = "application/problem+json"


def signup(client, email, password="a-good-password"):
    return client.post("/api/auth/signup", json={"email": email, "password": password})


def test_signup_creates_an_account_with_a_lowercased_email(client):
    response = signup(client, "Carol.Case@Example.COM")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "created_at"}
    assert body["email"] == "carol.case@example.com"
    assert body["created_at"].endswith("Z")


def test_signup_stores_a_12_round_bcrypt_hash_and_never_the_password(client, service):
    signup(client, "hash.check@example.com", "the-plain-password")
    [(password_hash,)] = service.sql("SELECT password_hash FROM users WHERE email = $1", "hash.check@example.com")
    assert password_hash.startswith("$2b$12$")
    assert "the-plain-password" not in password_hash


@pytest.mark.parametrize("email", ["dave@example.com", "DAVE@example.com", "Dave@Example.Com"], ids=["same", "upper", "mixed"])
def test_signup_with_a_taken_email_is_409_whatever_its_case(client, email):
    signup(client, "dave@example.com")
    response = signup(client, email)
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "a-good-password"}, "email"),
        ({"email": "a@b", "password": "a-good-password"}, "email"),
        ({"email": "x" * 250 + "@example.com", "password": "a-good-password"}, "email"),
        ({"email": "short@example.com", "password": "7chars!"}, "password"),
        ({"email": "long@example.com", "password": "x" * 73}, "password"),
        ({"email": "multibyte@example.com", "password": "é" * 37}, "password"),
        ({"email": "nul@example.com", "password": "pass\u0000word"}, "password"),
        ({"email": "missing@example.com"}, "password"),
        ({"email": "extra@example.com", "password": "a-good-password", "admin": True}, "admin"),
        ({"email": 1, "password": "a-good-password"}, "email"),
    ],
    ids=["no-at", "no-dot", "too-long-email", "short-password", "73-byte-password", "74-byte-utf8-password", "nul", "missing", "unknown-field", "email-not-string"],
)
def test_signup_with_an_invalid_body_is_400_naming_the_field(client, body, field):
    response = client.post("/api/auth/signup", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_signup_accepts_a_72_byte_password(client):
    assert signup(client, "seventytwo@example.com", "é" * 36).status_code == 201


@pytest.mark.parametrize("password", ["éééé", "🙂🙂"], ids=["4-characters", "2-characters"])
def test_signup_accepts_an_8_byte_password_of_fewer_characters(client, password):
    """The rule is 8 bytes of UTF-8, not 8 characters."""
    assert signup(client, f"{len(password)}chars@example.com", password).status_code == 201


def test_login_returns_a_bearer_token_for_the_user(client, service):
    created = signup(client, "erin@example.com", "erin-password").json()
    response = client.post("/api/auth/login", json={"email": "ERIN@example.com", "password": "erin-password"})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["user"] == {"id": created["id"], "email": "erin@example.com"}
    assert response.headers["cache-control"] == "no-store"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA"


def test_the_login_token_verifies_against_the_published_jwks(client):
    signup(client, "frank@example.com", "frank-password")
    token = client.post("/api/auth/login", json={"email": "frank@example.com", "password": "frank-password"}).json()["access_token"]
    jwks = client.get("/api/auth/jwks").json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["exp"] - claims["iat"] == 900


def test_the_login_token_opens_the_users_own_routes(client):
    user = signup(client, "grace@example.com", "grace-password").json()
    token = client.post("/api/auth/login", json={"email": "grace@example.com", "password": "grace-password"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=headers).json() == user
    assert client.get(f"/api/{user['id']}/tasks", headers=headers).json() == []


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "heidi@example.com", "password": "wrong-password"},
        {"email": "nobody@example.com", "password": "heidi-password"},
        {"email": "heidi@example.com", "password": "x" * 100},
        {"email": "not an email", "password": "heidi-password"},
    ],
    ids=["wrong-password", "unknown-email", "overlong-password", "malformed-email"],
)
def test_login_with_a_bad_credential_is_the_same_401(client, credentials):
    signup(client, "heidi@example.com", "heidi-password")
    response = client.post("/api/auth/login", json=credentials)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "The email or the password is wrong.",
    }


@pytest.mark.parametrize("body", ['{"email": "a@example.com"}', "[]", "{", '{"email": "a@example.com", "password": 12345678}'])
def test_login_with_a_malformed_body_is_400(client, body):
    response = client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_jwks_publishes_only_the_public_key(client):
    response = client.get("/api/auth/jwks")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert "d" not in key


def test_me_returns_the_tokens_user(client, alice):
    response = client.get("/api/me", headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["email"] == alice.email
    assert response.json()["id"] == alice.id


def test_me_without_a_token_is_401(client):
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_me_for_a_user_that_does_not_exist_is_404(client):
    response = client.get("/api/me", headers={"Authorization": f"Bearer {own_token(999_999_999)}"})
    assert response.status_code == 404
