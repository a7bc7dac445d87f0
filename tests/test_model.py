"""Model-based testing: random sequences of API calls, each checked against a plain model.

Hypothesis drives a state machine over real HTTP: several users create, replace, patch,
complete, delete, read and list tasks, including attempts on one another's tasks and paths,
and sign up (fresh emails, and taken ones in another case). After every call the answer is
compared with an in-memory model of what each user should see: which tasks, their titles,
descriptions and completion, newest first. It runs on SQLite and on PostgreSQL (`service`).
"""

import uuid
from datetime import datetime

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, multiple, precondition, rule, run_state_machine_as_test

from conftest import User, own_token, sign_up

TASK_FIELDS = {"id", "user_id", "title", "description", "completed", "created_at", "updated_at"}
MAX_SIGNUPS = 2  # per run: each costs a 12-round bcrypt hash on the service
MODEL_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

# Titles as a client sends them: words, maybe padded with spaces the service trims off.
WORDS = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=12)
CORE_TITLES = st.lists(WORDS, min_size=1, max_size=3).map(" ".join)
TITLES = st.tuples(st.sampled_from(["", " ", "  "]), CORE_TITLES, st.sampled_from(["", " ", "\t"]))
DESCRIPTIONS = st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
OMITTED = "omitted"  # a field left out of the body, as opposed to one sent as null


@pytest.fixture(scope="session")
def carol(service, issuer):
    return sign_up(service, "model-carol")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class TodoMachine(RuleBasedStateMachine):
    """What each user should see, and the service's answers checked against it after every call."""

    service = client = issuer = None  # set by the test
    known_users: list[User] = []

    users = Bundle("users")
    tasks = Bundle("tasks")

    def __init__(self):
        super().__init__()
        self.service.sql("DELETE FROM tasks")
        # user id -> task id -> the task as its owner should see it, in creation order
        self.model: dict[int, dict[int, dict]] = {user.id: {} for user in self.known_users}
        self.user_by_id = {user.id: user for user in self.known_users}
        self.emails = [user.email for user in self.known_users if user.password]  # linked accounts hold no login email
        self.signups = self.duplicates = 0

    @initialize(target=users)
    def the_signed_up_users(self):
        return multiple(*self.known_users)

    # --- helpers -------------------------------------------------------------------------

    def call(self, method, user, path_user=None, task_id=None, suffix="", **kwargs):
        path = f"/api/{(path_user or user).id}/tasks" + ("" if task_id is None else f"/{task_id}{suffix}")
        return self.client.request(method, path, headers=user.headers, **kwargs)

    @staticmethod
    def body(title, description, completed) -> tuple[dict, dict]:
        """The body a POST or PUT sends, and the fields the task should have after it."""
        body = {"title": "".join(title)}
        body.update({name: value for name, value in (("description", description), ("completed", completed)) if value != OMITTED})
        fields = {"title": title[1], "description": body.get("description"), "completed": body.get("completed", False)}
        return body, fields

    def caller(self, user, task, as_owner: bool):
        """The task's owner, or the drawn user (who may own it, or not)."""
        return self.user_by_id[task[0]] if as_owner else user

    def owns(self, user, task) -> bool:
        owner_id, task_id = task
        return owner_id == user.id and task_id in self.model[owner_id]

    def check_task(self, response, status, user, task_id):
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        expected = self.model[user.id][task_id]
        assert set(body) == TASK_FIELDS
        assert (body["id"], body["user_id"]) == (task_id, user.id)
        assert {name: body[name] for name in ("title", "description", "completed")} == expected["fields"]
        assert body["created_at"] == expected["created_at"]
        assert parse_time(body["updated_at"]) >= parse_time(expected["updated_at"])
        expected["updated_at"] = body["updated_at"]

    def check_not_found(self, response):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 404

    def check_list(self, user, **query):
        response = self.call("GET", user, params=query)
        assert response.status_code == 200, response.text
        listed = response.json()
        owned = self.model[user.id]
        expected_ids = [task_id for task_id in reversed(owned) if query.get("completed") in (None, str(owned[task_id]["fields"]["completed"]).lower())]
        offset, limit = query.get("offset", 0), query.get("limit", 100)
        assert [task["id"] for task in listed] == expected_ids[offset : offset + limit]
        for task in listed:
            assert task["user_id"] == user.id
            assert {name: task[name] for name in ("title", "description", "completed")} == owned[task["id"]]["fields"]

    # --- rules ---------------------------------------------------------------------------

    @rule(target=tasks, user=users, title=TITLES, description=st.just(OMITTED) | DESCRIPTIONS, completed=st.just(OMITTED) | st.booleans())
    def create(self, user, title, description, completed):
        body, fields = self.body(title, description, completed)
        response = self.call("POST", user, json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["updated_at"] == created["created_at"]
        self.model[user.id][created["id"]] = {"fields": fields, "created_at": created["created_at"], "updated_at": created["created_at"]}
        self.check_task(response, 201, user, created["id"])
        return (user.id, created["id"])

    @rule(user=users, task=tasks, as_owner=st.booleans(), title=TITLES, description=st.just(OMITTED) | DESCRIPTIONS, completed=st.just(OMITTED) | st.booleans())
    def replace(self, user, task, as_owner, title, description, completed):
        user = self.caller(user, task, as_owner)
        body, fields = self.body(title, description, completed)
        response = self.call("PUT", user, task_id=task[1], json=body)
        if not self.owns(user, task):
            return self.check_not_found(response)
        self.model[user.id][task[1]]["fields"] = fields
        self.check_task(response, 200, user, task[1])

    @rule(
        user=users,
        task=tasks,
        as_owner=st.booleans(),
        changes=st.fixed_dictionaries({}, optional={"title": TITLES, "description": DESCRIPTIONS, "completed": st.booleans()}).filter(bool),
    )
    def patch(self, user, task, as_owner, changes):
        user = self.caller(user, task, as_owner)
        body = {**changes, **({"title": "".join(changes["title"])} if "title" in changes else {})}
        response = self.call("PATCH", user, task_id=task[1], json=body)
        if not self.owns(user, task):
            return self.check_not_found(response)
        fields = self.model[user.id][task[1]]["fields"]
        fields.update({**changes, **({"title": changes["title"][1]} if "title" in changes else {})})
        self.check_task(response, 200, user, task[1])

    @rule(user=users, task=tasks, as_owner=st.booleans(), completed=st.booleans())
    def complete(self, user, task, as_owner, completed):
        user = self.caller(user, task, as_owner)
        response = self.call("PATCH", user, task_id=task[1], suffix="/complete", json={"completed": completed})
        if not self.owns(user, task):
            return self.check_not_found(response)
        self.model[user.id][task[1]]["fields"]["completed"] = completed
        self.check_task(response, 200, user, task[1])

    @rule(user=users, task=tasks, as_owner=st.booleans())
    def delete(self, user, task, as_owner):
        user = self.caller(user, task, as_owner)
        response = self.call("DELETE", user, task_id=task[1])
        if not self.owns(user, task):
            return self.check_not_found(response)
        assert response.status_code == 204, response.text
        assert response.content == b""
        del self.model[user.id][task[1]]

    @rule(user=users, task=tasks, as_owner=st.booleans())
    def get(self, user, task, as_owner):
        user = self.caller(user, task, as_owner)
        response = self.call("GET", user, task_id=task[1])
        if not self.owns(user, task):
            return self.check_not_found(response)
        self.check_task(response, 200, user, task[1])

    @rule(user=users, completed=st.sampled_from([None, "true", "false"]))
    def list_all(self, user, completed):
        self.check_list(user, **({} if completed is None else {"completed": completed}))

    @rule(user=users, limit=st.integers(1, 4), offset=st.integers(0, 5))
    def list_a_page(self, user, limit, offset):
        self.check_list(user, limit=limit, offset=offset)

    @rule(user=users, other=users, task=tasks, method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "LIST", "POST"]))
    def on_another_users_path(self, user, other, task, method):
        """The path names another user: 403 whatever the task, and nothing changes."""
        if user.id == other.id:
            return
        if method in ("LIST", "POST"):
            response = self.call("GET" if method == "LIST" else "POST", user, path_user=other, json={"title": "not mine"} if method == "POST" else None)
        else:
            response = self.call(method, user, path_user=other, task_id=task[1], json={"title": "not mine"} if method in ("PUT", "PATCH") else None)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        self.check_list(other)

    @precondition(lambda self: self.signups < MAX_SIGNUPS)
    @rule(target=users)
    def sign_up_a_fresh_email(self):
        self.signups += 1
        email = f"model.{uuid.uuid4().hex[:16]}@example.com"
        response = self.client.post("/api/auth/signup", json={"email": email.replace("model", "Model"), "password": "model-password-1"})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["email"] == email and set(body) == {"id", "email", "created_at"}  # stored lower-cased
        assert body["id"] not in self.model
        self.model[body["id"]] = {}
        self.emails.append(email)
        user = self.user_by_id[body["id"]] = User(body["id"], email, lambda: own_token(body["id"]), password="model-password-1")
        self.check_list(user)
        return user

    @precondition(lambda self: self.duplicates < 1)
    @rule(data=st.data())
    def sign_up_a_taken_email(self, data):
        self.duplicates += 1
        email = data.draw(st.sampled_from(self.emails))
        spelled = data.draw(st.sampled_from([email, email.upper(), email.capitalize()]))
        response = self.client.post("/api/auth/signup", json={"email": spelled, "password": "another-password"})
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"


def test_every_sequence_of_calls_matches_the_model(service, client, issuer, alice, bob, carol):
    machine = type("Machine", (TodoMachine,), {"service": service, "client": client, "issuer": issuer, "known_users": [alice, bob, carol]})
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)
