"""Who a token speaks for (contract v2, Identity): the key that verified it decides.

The service's own key signs login tokens, whose `sub` is a backend user id. Better Auth's keys
(the tests' JWKS over loopback HTTP) sign tokens whose `sub` is Better Auth's own user id, in
whatever form: each (issuer, sub) is linked to a backend account of its own, made on its first
token. Runs on SQLite and PostgreSQL.
"""

import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import own_token

SUBJECTS = [
    ("better-auth-random-id", lambda: secrets.token_urlsafe(24)),
    ("uuid", lambda: str(uuid.uuid4())),
    ("serial-number", lambda: str(secrets.randbelow(10**9) + 10**6)),
    ("255-characters", lambda: secrets.token_hex(128)[:255]),
    ("non-ascii", lambda: "ユーザー-" + secrets.token_hex(4)),
]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def me(client, token: str) -> httpx.Response:
    return client.get("/api/me", headers=bearer(token))


@pytest.mark.parametrize("make_subject", [make for _, make in SUBJECTS], ids=[name for name, _ in SUBJECTS])
def test_any_better_auth_subject_gets_an_account_that_keeps_tasks(client, make_token, make_subject):
    token = make_token(make_subject())
    account = me(client, token)
    assert account.status_code == 200, account.text
    assert set(account.json()) == {"id", "email", "created_at"}
    tasks = f"/api/{account.json()['id']}/tasks"
    created = client.post(tasks, json={"title": "from Better Auth"}, headers=bearer(token))
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == account.json()["id"]
    assert [task["id"] for task in client.get(tasks, headers=bearer(token)).json()] == [created.json()["id"]]


def test_every_new_token_of_the_same_better_auth_user_is_the_same_account(client, make_token):
    subject = str(uuid.uuid4())
    ids = {me(client, make_token(subject, iat=None, jti=uuid.uuid4().hex)).json()["id"] for _ in range(3)}
    assert len(ids) == 1


def test_better_auth_user_1_is_never_backend_user_1(client, service, make_token, pat):
    """A serial id from Better Auth names its own user, not the backend account with that number."""
    pats_task = client.post(pat.tasks_url(), json={"title": "pat's"}, headers=pat.headers).json()
    token = make_token(str(pat.id))
    account = me(client, token)
    assert account.status_code == 200
    assert account.json()["id"] != pat.id
    response = client.get(pat.tasks_url(), headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(pat.tasks_url(), headers=pat.headers).json() == [pats_task]


@pytest.mark.parametrize(("first", "second"), [("abc", "ABC"), ("1", "01"), ("user", "user ")], ids=["case", "leading-zero", "trailing-space"])
def test_subjects_are_compared_exactly(client, make_token, first, second):
    suffix = secrets.token_hex(4)
    first_id = me(client, make_token(suffix + first)).json()["id"]
    second_id = me(client, make_token(suffix + second)).json()["id"]
    assert first_id != second_id


def test_two_better_auth_users_cannot_reach_each_others_tasks(client, alice, bob):
    task = client.post(alice.tasks_url(), json={"title": "alice's"}, headers=alice.headers).json()
    assert client.get(alice.tasks_url(), headers=bob.headers).status_code == 403
    assert client.get(bob.tasks_url(task["id"]), headers=bob.headers).status_code == 404
    assert client.delete(bob.tasks_url(task["id"]), headers=bob.headers).status_code == 404
    assert client.get(alice.tasks_url(), headers=alice.headers).json() == [task]


def test_a_better_auth_user_and_a_password_account_cannot_reach_each_others_tasks(client, alice, pat):
    alices = client.post(alice.tasks_url(), json={"title": "alice's"}, headers=alice.headers).json()
    pats = client.post(pat.tasks_url(), json={"title": "pat's"}, headers=pat.headers).json()
    assert client.get(pat.tasks_url(), headers=alice.headers).status_code == 403
    assert client.get(alice.tasks_url(), headers=pat.headers).status_code == 403
    assert client.get(alice.tasks_url(pats["id"]), headers=alice.headers).status_code == 404
    assert client.get(pat.tasks_url(alices["id"]), headers=pat.headers).status_code == 404
    assert client.get(alice.tasks_url(), headers=alice.headers).json() == [alices]
    assert client.get(pat.tasks_url(), headers=pat.headers).json() == [pats]


def test_me_shows_the_tokens_email_lower_cased(client, make_token):
    response = me(client, make_token(str(uuid.uuid4()), email="Grace.Hopper@Example.com"))
    assert response.json()["email"] == "grace.hopper@example.com"


def test_me_shows_a_null_email_when_the_token_has_none(client, make_token):
    response = me(client, make_token(str(uuid.uuid4()), email=None))
    assert (response.status_code, response.json()["email"]) == (200, None)


def test_me_follows_the_email_of_the_latest_token(client, make_token):
    subject = str(uuid.uuid4())
    first = me(client, make_token(subject, email="old@example.com")).json()
    second = me(client, make_token(subject, email="new@example.com", jti="another")).json()
    assert (second["id"], second["email"]) == (first["id"], "new@example.com")


@pytest.mark.parametrize("email", [42, "", "x" * 255 + "@example.com", "nul\u0000@example.com"], ids=["number", "empty", "too-long", "nul"])
def test_an_email_claim_that_cannot_be_an_email_is_kept_as_null(client, make_token, email):
    response = me(client, make_token(str(uuid.uuid4()), email=email))
    assert (response.status_code, response.json()["email"]) == (200, None)


def test_a_better_auth_email_never_blocks_a_backend_signup_with_that_address(client, make_token):
    email = f"shared.{uuid.uuid4().hex[:12]}@example.com"
    linked = me(client, make_token(str(uuid.uuid4()), email=email)).json()
    signup = client.post("/api/auth/signup", json={"email": email, "password": "a-good-password"})
    assert signup.status_code == 201, signup.text
    assert signup.json()["id"] != linked["id"]


def test_a_linked_account_cannot_log_in_with_a_password(client, make_token):
    email = f"linked.{uuid.uuid4().hex[:12]}@example.com"
    me(client, make_token(str(uuid.uuid4()), email=email))
    response = client.post("/api/auth/login", json={"email": email, "password": "any-password-at-all"})
    assert response.status_code == 401
    assert response.json()["detail"] == "The email or the password is wrong."


def test_a_backend_account_with_the_same_email_is_not_the_better_auth_users(client, make_token):
    email = f"both.{uuid.uuid4().hex[:12]}@example.com"
    backend = client.post("/api/auth/signup", json={"email": email, "password": "a-good-password"}).json()
    linked = me(client, make_token(str(uuid.uuid4()), email=email)).json()
    assert linked["id"] != backend["id"]
    login = client.post("/api/auth/login", json={"email": email, "password": "a-good-password"})
    assert login.json()["user"]["id"] == backend["id"]


def test_twenty_first_requests_at_once_make_one_account(service, make_token):
    subject = str(uuid.uuid4())
    tokens = [make_token(subject, jti=str(n)) for n in range(20)]  # distinct texts: none is cached
    with httpx.Client(base_url=service.url, timeout=30, limits=httpx.Limits(max_connections=20)) as client:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda token: me(client, token), tokens))
    assert [answer.status_code for answer in answers] == [200] * 20
    assert len({answer.json()["id"] for answer in answers}) == 1
    [(count,)] = service.sql("SELECT count(*) FROM users WHERE subject = $1", subject)
    assert count == 1


def test_the_services_own_token_speaks_for_the_backend_user_in_sub(client, pat):
    response = me(client, own_token(pat.id))
    assert (response.status_code, response.json()["id"], response.json()["email"]) == (200, pat.id, pat.email)


def test_the_services_own_token_for_a_user_that_does_not_exist_is_404(client):
    assert me(client, own_token(10**15)).status_code == 404


def test_the_same_subject_from_another_issuer_is_another_account(client, service, make_token):
    """An issuer is part of the identity: changing JWT_ISSUER starts new links."""
    subject = str(uuid.uuid4())
    [(old_id,)] = service.sql(
        "INSERT INTO users (issuer, subject, created_at) VALUES ('https://old.example', $1, '2026-01-01T00:00:00Z') RETURNING id", subject
    )
    response = me(client, make_token(subject))
    assert response.status_code == 200
    assert response.json()["id"] != old_id
