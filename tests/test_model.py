"""Model-based testing: random sequences of API calls, each checked against a plain model.

Hypothesis drives a state machine over real HTTP: several users create, replace, patch,
complete, delete, read and list tasks, including attempts on one another's tasks and paths,
with and without If-Match and If-None-Match, and sign up (fresh emails, and taken ones in
another case). After every call the answer is compared with an in-memory model of what each
user should see: which tasks, every field of each (priority, due date and tags included),
their ETags, the list under filters and sorts with its total and next link, and the tags in
use. It runs on SQLite and on PostgreSQL (`service`).
"""

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, multiple, precondition, rule, run_state_machine_as_test

from conftest import User, own_token, sign_up

TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "priority", "due_at", "tags",
    "recurrence", "time_zone", "reminders", "series_id", "next_id", "created_at", "updated_at",
}
DEFAULTS = {"description": None, "completed": False, "priority": "medium", "due_at": None, "tags": []}
RANKS = {"low": 0, "medium": 1, "high": 2}
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
PRIORITIES = st.sampled_from(list(RANKS))
OMITTED = "omitted"  # a field left out of the body, as opposed to one sent as null


def due_at(moment: datetime, offset: timedelta, zulu: bool) -> tuple[str, str]:
    """(what a client sends: the moment at some offset, what the service answers: UTC, microseconds)."""
    local = moment.replace(tzinfo=UTC).astimezone(timezone(offset)).isoformat()
    sent = local.replace("+00:00", "Z") if zulu else local
    return sent, moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


OFFSETS = st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=-5), timedelta(hours=5, minutes=30), timedelta(hours=-9, minutes=-30)])
DUE_ATS = st.none() | st.builds(due_at, st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30)), OFFSETS, st.booleans())

# Tags as a client sends them (any case, padded) and as the service keeps them (trimmed,
# lower-case, once each, sorted). Letters and digits only: their order is the same in every
# collation. A few common ones make the tag filter and the counts meet.
TAG_WORDS = ["work", "home", "urgent", "a1"]
TAG = st.sampled_from(TAG_WORDS) | st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
SENT_TAG = st.tuples(st.sampled_from(["", " "]), TAG, st.booleans()).map(lambda drawn: drawn[0] + (drawn[1].upper() if drawn[2] else drawn[1]) + drawn[0])
TAGS = st.lists(SENT_TAG, max_size=5).map(lambda sent: (sent, sorted({tag.strip().lower() for tag in sent})))

# If-Match as a client sends it: nothing, the ETag it holds, *, a list holding it, an older
# one, or the weak form of the current one (which a strong comparison never matches).
CONDITIONS = st.sampled_from([None, "current", "star", "list", "stale", "weak"])
MATCHING = {None, "current", "star", "list"}
# A POST body's fields as drawn: every optional one may be left out.
NEW_TASKS = st.fixed_dictionaries(
    {
        "title": TITLES,
        "description": st.just(OMITTED) | DESCRIPTIONS,
        "completed": st.just(OMITTED) | st.booleans(),
        "priority": st.just(OMITTED) | PRIORITIES,
        "due_at": st.just(OMITTED) | DUE_ATS,
        "tags": st.just(OMITTED) | TAGS,
    }
)
SORTS = [None, "created_at", "-created_at", "updated_at", "-updated_at", "due_at", "-due_at", "priority", "-priority"]


def sent(name, value):
    """A drawn field as the body carries it."""
    if name == "title":
        return "".join(value)
    return value[0] if name in ("due_at", "tags") and value is not None else value


def kept(name, value):
    """A drawn field as the task should hold it."""
    if name == "title":
        return value[1]
    return value[1] if name in ("due_at", "tags") and value is not None else value


@pytest.fixture(scope="session")
def carol(service, issuer):
    return sign_up(service, "model-carol")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def in_utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        # task id -> every ETag the task has had, the current one last (kept after a delete)
        self.etags: dict[int, list[str]] = {}
        self.user_by_id = {user.id: user for user in self.known_users}
        self.emails = [user.email for user in self.known_users if user.password]  # linked accounts hold no login email
        self.signups = self.duplicates = 0

    @initialize(target=users)
    def the_signed_up_users(self):
        return multiple(*self.known_users)

    @initialize(target=tasks, data=st.data())
    def a_few_tasks_each(self, data):
        """Lists, sorts and filters have something to order from the first step."""
        created = []
        for user in self.known_users:
            for _ in range(data.draw(st.integers(1, 4), label=f"tasks of user {user.id}")):
                created.append(self.create_one(user, **data.draw(NEW_TASKS)))
        return multiple(*created)

    # --- helpers -------------------------------------------------------------------------

    def call(self, method, user, path_user=None, task_id=None, suffix="", headers=None, **kwargs):
        path = f"/api/{(path_user or user).id}/tasks" + ("" if task_id is None else f"/{task_id}{suffix}")
        headers = {**user.headers, **{name: value for name, value in (headers or {}).items() if value is not None}}
        return self.client.request(method, path, headers=headers, **kwargs)

    @staticmethod
    def body(**drawn) -> tuple[dict, dict]:
        """The body a POST or PUT sends, and the fields the task should have after it."""
        body = {name: sent(name, value) for name, value in drawn.items() if value is not OMITTED}
        fields = {**DEFAULTS, **{name: kept(name, value) for name, value in drawn.items() if value is not OMITTED}}
        return body, fields

    def caller(self, user, task, as_owner: bool):
        """The task's owner, or the drawn user (who may own it, or not)."""
        return self.user_by_id[task[0]] if as_owner else user

    def owns(self, user, task) -> bool:
        owner_id, task_id = task
        return owner_id == user.id and task_id in self.model[owner_id]

    def if_match(self, task_id, condition) -> dict:
        """The If-Match header a condition stands for, from the task's ETags as the model knows them."""
        history = self.etags.get(task_id, ['"0-0"'])
        current = history[-1]
        value = {
            None: None,
            "current": current,
            "star": "*",
            "list": f'"0-0", {current}',
            "stale": history[-2] if len(history) > 1 else '"0-0"',
            "weak": f"W/{current}",
        }[condition]
        return {"If-Match": value}

    def check_etag(self, response, task_id, wrote: bool):
        """A strong ETag: a new one after a write, the one last seen otherwise."""
        value = response.headers["etag"]
        assert value.startswith('"') and value.endswith('"') and len(value) > 2, value
        history = self.etags.setdefault(task_id, [])
        if wrote:
            assert value not in history, (value, history)
            history.append(value)
        else:
            assert value == history[-1], (value, history)

    def check_task(self, response, status, user, task_id, wrote=True):
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        expected = self.model[user.id][task_id]
        assert set(body) == TASK_FIELDS
        assert (body["id"], body["user_id"]) == (task_id, user.id)
        assert {name: body[name] for name in expected["fields"]} == expected["fields"]
        assert body["created_at"] == expected["created_at"]
        assert parse_time(body["updated_at"]) >= parse_time(expected["updated_at"])
        if not wrote:
            assert body["updated_at"] == expected["updated_at"]
        expected["updated_at"] = body["updated_at"]
        self.check_etag(response, task_id, wrote)

    def check_not_found(self, response):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 404

    def check_precondition_failed(self, response):
        assert response.status_code == 412, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 412

    def expected_ids(self, user, completed=None, priority=None, tag=(), overdue=None, sort=None) -> list[int]:
        """The ids of the user's tasks the list should answer, in order, before limit and offset."""
        owned = self.model[user.id]
        now = in_utc(datetime.now(UTC))

        def matches(fields) -> bool:
            late = fields["due_at"] is not None and fields["due_at"] < now and not fields["completed"]
            return (
                completed in (None, str(fields["completed"]).lower())
                and (priority is None or fields["priority"] in priority.split(","))
                and set(tag) <= set(fields["tags"])
                and overdue in (None, str(late).lower())
            )

        key = (sort or "-created_at").lstrip("-")
        descending = (sort or "-created_at").startswith("-")

        def value(task_id):
            task = owned[task_id]
            if key in ("created_at", "updated_at"):
                return parse_time(task[key])
            return RANKS[task["fields"]["priority"]] if key == "priority" else task["fields"]["due_at"]

        found = [task_id for task_id in owned if matches(owned[task_id]["fields"])]
        dated = sorted((task_id for task_id in found if value(task_id) is not None), key=lambda task_id: (value(task_id), task_id), reverse=descending)
        undated = sorted((task_id for task_id in found if value(task_id) is None), reverse=descending)  # last, either way
        return dated + undated

    def check_list(self, user, limit=None, offset=None, **filters):
        params = [(name, value) for name, value in filters.items() if value is not None and name != "tag"]
        params += [("tag", tag) for tag in filters.get("tag", ())]
        params += [(name, str(value)) for name, value in (("limit", limit), ("offset", offset)) if value is not None]
        response = self.call("GET", user, params=params)
        assert response.status_code == 200, response.text
        listed = response.json()
        owned = self.model[user.id]
        expected = self.expected_ids(user, **filters)
        offset, limit = offset or 0, limit or 100
        assert [task["id"] for task in listed] == expected[offset : offset + limit]
        assert response.headers["x-total-count"] == str(len(expected))
        assert ("link" in response.headers) == (offset + limit < len(expected))
        for task in listed:
            assert task["user_id"] == user.id
            assert {name: task[name] for name in owned[task["id"]]["fields"]} == owned[task["id"]]["fields"]
            assert task["updated_at"] == owned[task["id"]]["updated_at"]

    # --- rules ---------------------------------------------------------------------------

    @rule(target=tasks, user=users, drawn=NEW_TASKS)
    def create(self, user, drawn):
        return self.create_one(user, **drawn)

    def create_one(self, user, **drawn):
        body, fields = self.body(**drawn)
        response = self.call("POST", user, json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["updated_at"] == created["created_at"]
        self.model[user.id][created["id"]] = {"fields": fields, "created_at": created["created_at"], "updated_at": created["created_at"]}
        self.check_task(response, 201, user, created["id"])
        return (user.id, created["id"])

    @rule(
        user=users,
        task=tasks,
        as_owner=st.booleans(),
        condition=CONDITIONS,
        title=TITLES,
        description=st.just(OMITTED) | DESCRIPTIONS,
        completed=st.just(OMITTED) | st.booleans(),
        priority=st.just(OMITTED) | PRIORITIES,
        due_at=st.just(OMITTED) | DUE_ATS,
        tags=st.just(OMITTED) | TAGS,
    )
    def replace(self, user, task, as_owner, condition, **drawn):
        user = self.caller(user, task, as_owner)
        body, fields = self.body(**drawn)
        response = self.call("PUT", user, task_id=task[1], headers=self.if_match(task[1], condition), json=body)
        if not self.owns(user, task):
            return self.check_not_found(response)
        if condition not in MATCHING:
            return self.check_precondition_failed(response)
        self.model[user.id][task[1]]["fields"] = fields
        self.check_task(response, 200, user, task[1])

    @rule(
        user=users,
        task=tasks,
        as_owner=st.booleans(),
        condition=CONDITIONS,
        changes=st.fixed_dictionaries(
            {},
            optional={"title": TITLES, "description": DESCRIPTIONS, "completed": st.booleans(), "priority": PRIORITIES, "due_at": DUE_ATS, "tags": TAGS},
        ).filter(bool),
    )
    def patch(self, user, task, as_owner, condition, changes):
        user = self.caller(user, task, as_owner)
        body = {name: sent(name, value) for name, value in changes.items()}
        response = self.call("PATCH", user, task_id=task[1], headers=self.if_match(task[1], condition), json=body)
        if not self.owns(user, task):
            return self.check_not_found(response)
        if condition not in MATCHING:
            return self.check_precondition_failed(response)
        self.model[user.id][task[1]]["fields"].update({name: kept(name, value) for name, value in changes.items()})
        self.check_task(response, 200, user, task[1])

    @rule(user=users, task=tasks, as_owner=st.booleans(), condition=CONDITIONS, completed=st.booleans())
    def complete(self, user, task, as_owner, condition, completed):
        user = self.caller(user, task, as_owner)
        response = self.call("PATCH", user, task_id=task[1], suffix="/complete", headers=self.if_match(task[1], condition), json={"completed": completed})
        if not self.owns(user, task):
            return self.check_not_found(response)
        if condition not in MATCHING:
            return self.check_precondition_failed(response)
        self.model[user.id][task[1]]["fields"]["completed"] = completed
        self.check_task(response, 200, user, task[1])

    @rule(user=users, task=tasks, as_owner=st.booleans(), condition=CONDITIONS)
    def delete(self, user, task, as_owner, condition):
        user = self.caller(user, task, as_owner)
        response = self.call("DELETE", user, task_id=task[1], headers=self.if_match(task[1], condition))
        if not self.owns(user, task):
            return self.check_not_found(response)
        if condition not in MATCHING:
            return self.check_precondition_failed(response)
        assert response.status_code == 204, response.text
        assert response.content == b""
        del self.model[user.id][task[1]]

    @rule(user=users, task=tasks, as_owner=st.booleans(), if_none_match=st.sampled_from([None, "current", "weak", "stale"]))
    def get(self, user, task, as_owner, if_none_match):
        user = self.caller(user, task, as_owner)
        header = self.if_match(task[1], if_none_match)["If-Match"]
        response = self.call("GET", user, task_id=task[1], headers={"If-None-Match": header})
        if not self.owns(user, task):
            return self.check_not_found(response)
        if if_none_match in ("current", "weak"):
            assert response.status_code == 304, response.text
            assert response.content == b""
            return self.check_etag(response, task[1], wrote=False)
        self.check_task(response, 200, user, task[1], wrote=False)

    @rule(user=users, completed=st.sampled_from([None, "true", "false"]), overdue=st.sampled_from([None, "true", "false"]))
    def list_all(self, user, completed, overdue):
        self.check_list(user, completed=completed, overdue=overdue)

    @rule(user=users, limit=st.integers(1, 4), offset=st.integers(0, 5))
    def list_a_page_in_every_order(self, user, limit, offset):
        for sort in SORTS:
            self.check_list(user, limit=limit, offset=offset, sort=sort)

    @rule(
        user=users,
        priority=st.none() | st.lists(PRIORITIES, min_size=1, max_size=3, unique=True).map(",".join),
        tag=st.lists(st.sampled_from(TAG_WORDS), max_size=2),
        sort=st.sampled_from(SORTS),
    )
    def list_filtered(self, user, priority, tag, sort):
        self.check_list(user, priority=priority, tag=tag, sort=sort)

    @rule(user=users)
    def tags_in_use(self, user):
        counts = Counter(tag for task in self.model[user.id].values() for tag in task["fields"]["tags"])
        response = self.client.get(f"/api/{user.id}/tags", headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.json() == [{"tag": tag, "count": counts[tag]} for tag in sorted(counts)]

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
