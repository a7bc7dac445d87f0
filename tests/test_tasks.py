"""The task routes as a frontend sees them: success, order of checks, ownership, validation."""

import json
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

import pytest

from conftest import own_token

PROBLEM = "application/problem+json"
MIB = 1024 * 1024
MAX_ID = 2**63 - 1
JSON = {"Content-Type": "application/json"}
TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "priority", "due_at", "tags",
    "recurrence", "time_zone", "reminders", "series_id", "next_id", "created_at", "updated_at",
}

# Every task route: (method, whether the path names a task, what follows the task id, a good body).
ROUTES = {
    "list": ("GET", False, "", None),
    "create": ("POST", False, "", {"title": "a new title"}),
    "get": ("GET", True, "", None),
    "replace": ("PUT", True, "", {"title": "a new title"}),
    "update": ("PATCH", True, "", {"title": "a new title"}),
    "complete": ("PATCH", True, "/complete", {"completed": True}),
    "delete": ("DELETE", True, "", None),
}
TASK_ROUTES = [name for name, (_, has_task, _, _) in ROUTES.items() if has_task]
BODY_ROUTES = [name for name, (_, _, _, body) in ROUTES.items() if body is not None]
TASK_BODY_ROUTES = [name for name in BODY_ROUTES if name in TASK_ROUTES]


def call(client, route, user_id, task_id=None, headers=None, **body):
    """Send `route` for the path's user and task; json= or content= replaces its good body."""
    method, has_task, suffix, good_body = ROUTES[route]
    path = f"/api/{user_id}/tasks" + (f"/{task_id}{suffix}" if has_task else "")
    if good_body is not None and not body:
        body = {"json": good_body}
    return client.request(method, path, headers=headers or {}, **body)


def problem(response, status: int) -> dict:
    """The RFC 9457 body of an error response, after checking its shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["title"] == HTTPStatus(status).phrase
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def error_fields(response) -> list[str]:
    """The fields a 400's `errors` names, after checking each error has a field and a message."""
    errors = problem(response, 400)["errors"]
    assert errors and all(set(error) == {"field", "message"} and error["message"] for error in errors)
    return [error["field"] for error in errors]


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


@pytest.fixture
def task(create_task):
    """Alice's task, with every field set away from its default."""
    return create_task(title="original title", description="original notes", completed=True)


@pytest.fixture
def missing_task_id(create_task, client, alice):
    """The id of a task alice had and deleted."""
    task_id = create_task()["id"]
    assert client.delete(alice.tasks_url(task_id), headers=alice.headers).status_code == 204
    return task_id


def alice_sees(client, alice, task_id):
    response = client.get(alice.tasks_url(task_id), headers=alice.headers)
    assert response.status_code == 200, response.text
    return response.json()


def alice_lists(client, alice):
    response = client.get(alice.tasks_url(), headers=alice.headers)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------
# Create and read
# ---------------------------------------------------------------------------------------


def test_create_is_201_with_the_task_and_its_location(client, alice):
    response = client.post(alice.tasks_url(), json={"title": "buy milk"}, headers=alice.headers)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert isinstance(task["id"], int) and task["id"] > 0
    assert response.headers["location"] == f"/api/{alice.id}/tasks/{task['id']}"
    assert client.get(response.headers["location"], headers=alice.headers).json() == task


def test_create_defaults_to_no_description_and_not_completed(client, alice):
    task = client.post(alice.tasks_url(), json={"title": "buy milk"}, headers=alice.headers).json()
    assert task["user_id"] == alice.id
    assert task["title"] == "buy milk"
    assert task["description"] is None
    assert task["completed"] is False


def test_create_keeps_a_given_description_and_completed(client, alice):
    body = {"title": "buy milk", "description": "two litres", "completed": True}
    task = client.post(alice.tasks_url(), json=body, headers=alice.headers).json()
    assert {name: task[name] for name in body} == body


def test_create_sets_both_timestamps_to_now_in_utc(client, alice):
    before = datetime.now(UTC)
    task = client.post(alice.tasks_url(), json={"title": "buy milk"}, headers=alice.headers).json()
    assert task["created_at"] == task["updated_at"]
    assert abs(parse_time(task["created_at"]) - before) < timedelta(seconds=30)


def test_create_accepts_a_json_content_type_with_a_charset(client, alice):
    response = client.post(
        alice.tasks_url(),
        content='{"title": "buy milk"}',
        headers={**alice.headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201
    assert response.json()["title"] == "buy milk"


def test_get_returns_the_task(client, alice, task):
    response = client.get(alice.tasks_url(task["id"]), headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == task


# ---------------------------------------------------------------------------------------
# List
# ---------------------------------------------------------------------------------------


def test_list_of_a_user_without_tasks_is_an_empty_array(client, alice):
    response = client.get(alice.tasks_url(), headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == []


def test_list_is_newest_first(client, alice, create_task):
    created = [create_task(title=title) for title in ("first", "second", "third")]
    assert alice_lists(client, alice) == created[::-1]


@pytest.mark.parametrize(("completed", "titles"), [("true", ["done"]), ("false", ["to do 2", "to do 1"])], ids=["true", "false"])
def test_list_filters_on_completed(client, alice, create_task, completed, titles):
    create_task(title="to do 1")
    create_task(title="done", completed=True)
    create_task(title="to do 2", completed=False)
    response = client.get(alice.tasks_url(), params={"completed": completed}, headers=alice.headers)
    assert response.status_code == 200
    assert [task["title"] for task in response.json()] == titles


def test_list_returns_the_newest_100_by_default(client, alice, create_task):
    for number in range(101):
        create_task(title=f"task {number}")
    titles = [task["title"] for task in alice_lists(client, alice)]
    assert titles == [f"task {number}" for number in range(100, 0, -1)]


def test_list_limit_and_offset_page_through_newest_first(client, alice, create_task):
    for number in range(5):
        create_task(title=f"task {number}")
    pages = [
        [task["title"] for task in client.get(alice.tasks_url(), params={"limit": 2, "offset": offset}, headers=alice.headers).json()]
        for offset in (0, 2, 4, 6)
    ]
    assert pages == [["task 4", "task 3"], ["task 2", "task 1"], ["task 0"], []]


def test_list_limit_and_offset_apply_after_the_completed_filter(client, alice, create_task):
    for number in range(4):
        create_task(title=f"task {number}", completed=number % 2 == 0)
    response = client.get(alice.tasks_url(), params={"completed": "true", "limit": 1, "offset": 1}, headers=alice.headers)
    assert [task["title"] for task in response.json()] == ["task 0"]


def test_list_accepts_the_maximum_limit_of_500(client, alice, create_task):
    task = create_task()
    response = client.get(alice.tasks_url(), params={"limit": 500}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == [task]


def test_list_with_an_offset_past_the_end_is_an_empty_page(client, alice, create_task):
    create_task()
    response = client.get(alice.tasks_url(), params={"offset": "9" * 18}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "abc"}, "offset"),
        ({"completed": "yes"}, "completed"),
        ({"completed": "1"}, "completed"),
        ({"completed": ""}, "completed"),
    ],
    ids=["limit-0", "limit-501", "limit-abc", "limit-negative", "limit-fraction", "limit-empty", "offset-negative", "offset-abc", "completed-yes", "completed-1", "completed-empty"],
)
def test_list_with_a_bad_query_parameter_is_400_naming_it(client, alice, query, field):
    response = client.get(alice.tasks_url(), params=query, headers=alice.headers)
    assert error_fields(response) == [field]


# ---------------------------------------------------------------------------------------
# Replace, update, complete, delete
# ---------------------------------------------------------------------------------------


def test_put_replaces_every_field_it_is_given(client, alice, task):
    body = {"title": "replaced", "description": "new notes", "completed": False}
    response = client.put(alice.tasks_url(task["id"]), json=body, headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {**task, **body, "updated_at": response.json()["updated_at"]}


def test_put_resets_omitted_description_and_completed_to_their_defaults(client, alice, task):
    response = client.put(alice.tasks_url(task["id"]), json={"title": "replaced"}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["description"] is None
    assert response.json()["completed"] is False
    assert alice_sees(client, alice, task["id"]) == response.json()


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "renamed"},
        {"description": "new notes"},
        {"description": None},
        {"completed": False},
        {"title": "renamed", "completed": False},
        {"title": "renamed", "description": None, "completed": False},
    ],
    ids=["title", "description", "description-null", "completed", "title-and-completed", "all-three"],
)
def test_patch_changes_only_the_fields_it_names(client, alice, task, changes):
    response = client.patch(alice.tasks_url(task["id"]), json=changes, headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {**task, **changes, "updated_at": response.json()["updated_at"]}
    assert alice_sees(client, alice, task["id"]) == response.json()


@pytest.mark.parametrize("completed", [True, False], ids=["done", "not-done"])
def test_complete_sets_completed_and_nothing_else(client, alice, create_task, completed):
    task = create_task(description="notes", completed=not completed)
    response = client.patch(alice.tasks_url(task["id"]) + "/complete", json={"completed": completed}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {**task, "completed": completed, "updated_at": response.json()["updated_at"]}


@pytest.mark.parametrize("route", ["create", "replace", "update"])
def test_the_title_is_trimmed(client, alice, task, route):
    response = call(client, route, alice.id, task["id"], alice.headers, json={"title": "  \t buy milk \n "})
    assert response.status_code == (201 if route == "create" else 200)
    assert response.json()["title"] == "buy milk"


@pytest.mark.parametrize("route", ["replace", "update", "complete"])
def test_a_write_moves_updated_at_but_not_created_at(client, alice, task, route):
    response = call(client, route, alice.id, task["id"], alice.headers)
    assert response.status_code == 200
    assert response.json()["created_at"] == task["created_at"]
    assert parse_time(response.json()["updated_at"]) > parse_time(task["updated_at"])


def test_delete_is_204_with_an_empty_body_and_then_the_task_is_404(client, alice, task):
    response = client.delete(alice.tasks_url(task["id"]), headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    problem(client.get(alice.tasks_url(task["id"]), headers=alice.headers), 404)


def test_delete_leaves_the_other_tasks(client, alice, task, create_task):
    other = create_task(title="keep me")
    client.delete(alice.tasks_url(task["id"]), headers=alice.headers)
    assert alice_lists(client, alice) == [other]


def test_deleting_a_deleted_task_is_404(client, alice, task):
    client.delete(alice.tasks_url(task["id"]), headers=alice.headers)
    problem(client.delete(alice.tasks_url(task["id"]), headers=alice.headers), 404)


# ---------------------------------------------------------------------------------------
# Order of checks: 401 → 403 → 400 → 404
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_task_route_without_a_token_is_401(client, alice, task, route):
    response = call(client, route, alice.id, task["id"])
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert alice_sees(client, alice, task["id"]) == task


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_task_route_with_an_invalid_token_is_401(client, alice, task, route):
    response = call(client, route, alice.id, task["id"], {"Authorization": "Bearer not.a.token"})
    problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert alice_sees(client, alice, task["id"]) == task


ORDER_OF_CHECKS = [
    pytest.param(None, "bad", 401, id="no-token-beats-a-foreign-path-a-bad-body-and-a-missing-task"),
    pytest.param("bob", "bad", 403, id="foreign-path-beats-a-bad-body"),
    pytest.param("bob", "good", 403, id="foreign-path-beats-a-missing-task"),
    pytest.param("alice", "bad", 400, id="bad-body-beats-a-missing-task"),
    pytest.param("alice", "good", 404, id="good-body-and-a-missing-task"),
]


@pytest.mark.parametrize("route", TASK_BODY_ROUTES)
@pytest.mark.parametrize(("caller", "body", "status"), ORDER_OF_CHECKS)
def test_a_write_to_a_missing_task_of_alices_is_checked_401_then_403_then_400_then_404(client, alice, bob, missing_task_id, route, caller, body, status):
    token = {"alice": alice.headers, "bob": bob.headers, None: {}}[caller]
    if body == "bad":
        response = call(client, route, alice.id, missing_task_id, {**token, **JSON}, content="{")
    else:
        response = call(client, route, alice.id, missing_task_id, token)
    problem(response, status)


@pytest.mark.parametrize("route", ["get", "delete"])
def test_a_foreign_path_beats_a_missing_task_without_a_body(client, alice, bob, missing_task_id, route):
    problem(call(client, route, alice.id, missing_task_id, bob.headers), 403)


def test_a_foreign_path_beats_a_bad_query(client, alice, bob):
    problem(client.get(alice.tasks_url(), params={"limit": "0"}, headers=bob.headers), 403)


def test_a_foreign_create_with_a_bad_body_is_403(client, alice, bob):
    response = client.post(alice.tasks_url(), content="{", headers={**bob.headers, **JSON})
    problem(response, 403)


def test_no_token_on_a_path_user_id_of_0_is_401(client, alice):
    problem(client.get("/api/0/tasks"), 401)


@pytest.mark.parametrize("route", TASK_ROUTES)
def test_a_task_that_does_not_exist_is_404(client, alice, missing_task_id, route):
    problem(call(client, route, alice.id, missing_task_id, alice.headers), 404)


@pytest.mark.parametrize("route", TASK_ROUTES)
def test_the_largest_task_id_that_does_not_exist_is_404(client, alice, route):
    problem(call(client, route, alice.id, MAX_ID, alice.headers), 404)


# ---------------------------------------------------------------------------------------
# Ownership: bob can never reach alice's task
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
def test_bob_on_alices_path_is_403_and_alices_tasks_are_unchanged(client, alice, bob, task, route):
    problem(call(client, route, alice.id, task["id"], bob.headers), 403)
    assert alice_lists(client, alice) == [task]


@pytest.mark.parametrize("route", TASK_ROUTES)
def test_bob_on_his_own_path_with_alices_task_id_is_404_and_it_is_unchanged(client, alice, bob, task, route):
    problem(call(client, route, bob.id, task["id"], bob.headers), 404)
    assert alice_lists(client, alice) == [task]


@pytest.mark.parametrize("route", TASK_ROUTES)
def test_alices_task_id_looks_to_bob_exactly_like_a_missing_task(client, alice, bob, task, missing_task_id, route):
    alices = call(client, route, bob.id, task["id"], bob.headers)
    missing = call(client, route, bob.id, missing_task_id, bob.headers)
    assert (alices.status_code, alices.json()) == (missing.status_code, missing.json())


def test_bobs_list_never_shows_alices_tasks(client, alice, bob, task, create_task):
    bobs = create_task(user=bob, title="bob's task")
    assert client.get(bob.tasks_url(), headers=bob.headers).json() == [bobs]
    assert alice_lists(client, alice) == [task]


def test_bobs_task_is_created_for_bob_and_not_for_alice(client, alice, bob, task):
    response = client.post(bob.tasks_url(), json={"title": "bob's task"}, headers=bob.headers)
    assert response.status_code == 201
    assert response.json()["user_id"] == bob.id
    assert alice_lists(client, alice) == [task]


# ---------------------------------------------------------------------------------------
# Path ids and users that do not exist
# ---------------------------------------------------------------------------------------

BAD_IDS = ["0", str(2**63), "1" * 30, "abc", "-1", "1.5", "0x10"]
BAD_ID_IDS = ["zero", "2**63", "30-digits", "letters", "negative", "fraction", "hex"]


@pytest.mark.parametrize("route", TASK_ROUTES)
@pytest.mark.parametrize("task_id", BAD_IDS, ids=BAD_ID_IDS)
def test_a_task_id_that_is_not_a_64_bit_positive_integer_is_404(client, alice, route, task_id):
    problem(call(client, route, alice.id, task_id, alice.headers), 404)


@pytest.mark.parametrize("route", ["list", "create"])
@pytest.mark.parametrize("user_id", BAD_IDS, ids=BAD_ID_IDS)
def test_a_user_id_that_is_not_a_64_bit_positive_integer_is_404(client, alice, route, user_id):
    problem(call(client, route, user_id, headers=alice.headers), 404)


GHOSTS = pytest.mark.parametrize("ghost_id", [999_999_999, MAX_ID], ids=["unknown-id", "largest-id"])


@GHOSTS
def test_listing_for_a_token_whose_user_does_not_exist_is_404(client, ghost_id):
    response = client.get(f"/api/{ghost_id}/tasks", headers={"Authorization": f"Bearer {own_token(ghost_id)}"})
    problem(response, 404)


@GHOSTS
def test_creating_for_a_token_whose_user_does_not_exist_is_404_and_creates_nothing(client, service, ghost_id):
    response = client.post(f"/api/{ghost_id}/tasks", json={"title": "t"}, headers={"Authorization": f"Bearer {own_token(ghost_id)}"})
    problem(response, 404)
    [(count,)] = service.sql("SELECT count(*) FROM tasks")
    assert count == 0


@GHOSTS
def test_creating_with_a_bad_body_for_a_token_whose_user_does_not_exist_is_400(client, ghost_id):
    headers = {"Authorization": f"Bearer {own_token(ghost_id)}", **JSON}
    assert error_fields(client.post(f"/api/{ghost_id}/tasks", content="{", headers=headers)) == ["body"]


# ---------------------------------------------------------------------------------------
# Validation: every bad body is a 400 naming what is wrong, and changes nothing
# ---------------------------------------------------------------------------------------


def assert_nothing_changed(client, alice, task):
    """Alice still has exactly her one task, as it was."""
    assert alice_lists(client, alice) == [task]


TASK_BODY_CASES = [
    pytest.param({"title": "t", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"title": "t", "tag": "work"}, "tag", id="unknown-field-tag-for-tags"),
    pytest.param({"title": "t", "version": 1}, "version", id="unknown-field-version"),
    pytest.param({"title": "t", "id": 1}, "id", id="server-owned-id"),
    pytest.param({"title": "t", "user_id": 1}, "user_id", id="server-owned-user_id"),
    pytest.param({"title": "t", "created_at": "2020-01-01T00:00:00Z"}, "created_at", id="server-owned-created_at"),
    pytest.param({"title": "t", "updated_at": "2020-01-01T00:00:00Z"}, "updated_at", id="server-owned-updated_at"),
    pytest.param({"title": "t", "completed": "yes"}, "completed", id="completed-yes"),
    pytest.param({"title": "t", "completed": 1}, "completed", id="completed-1"),
    pytest.param({"title": "t", "completed": "true"}, "completed", id="completed-string-true"),
    pytest.param({"title": "t", "completed": None}, "completed", id="completed-null"),
    pytest.param({"title": 1}, "title", id="title-number"),
    pytest.param({"title": ["t"]}, "title", id="title-array"),
    pytest.param({"title": None}, "title", id="title-null"),
    pytest.param({"title": ""}, "title", id="title-empty"),
    pytest.param({"title": " \t\n "}, "title", id="title-whitespace-only"),
    pytest.param({"title": " " + "x" * 256 + " "}, "title", id="title-256-after-trim"),
    pytest.param({"title": "a\u0000b"}, "title", id="title-nul"),
    pytest.param({"title": "t", "description": 1}, "description", id="description-number"),
    pytest.param({"title": "t", "description": "x" * 10_001}, "description", id="description-10001"),
    pytest.param({"title": "t", "description": "a\u0000b"}, "description", id="description-nul"),
]


@pytest.mark.parametrize("route", ["create", "replace", "update"])
@pytest.mark.parametrize(("body", "field"), TASK_BODY_CASES)
def test_a_task_body_with_a_bad_field_is_400_naming_it_and_changes_nothing(client, alice, task, route, body, field):
    response = call(client, route, alice.id, task["id"], alice.headers, json=body)
    assert error_fields(response) == [field]
    assert_nothing_changed(client, alice, task)


@pytest.mark.parametrize("route", ["create", "replace"])
@pytest.mark.parametrize("body", [{}, {"description": "notes", "completed": True}], ids=["empty", "no-title"])
def test_create_and_put_without_a_title_are_400_naming_it(client, alice, task, route, body):
    response = call(client, route, alice.id, task["id"], alice.headers, json=body)
    assert error_fields(response) == ["title"]
    assert_nothing_changed(client, alice, task)


def test_patch_with_an_empty_object_is_400_and_changes_nothing(client, alice, task):
    response = client.patch(alice.tasks_url(task["id"]), json={}, headers=alice.headers)
    assert error_fields(response) == ["body"]
    assert_nothing_changed(client, alice, task)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"completed": "yes"}, "completed", id="yes"),
        pytest.param({"completed": 1}, "completed", id="one"),
        pytest.param({"completed": "true"}, "completed", id="string-true"),
        pytest.param({"completed": None}, "completed", id="null"),
        pytest.param({}, "completed", id="missing"),
        pytest.param({"completed": False, "title": "t"}, "title", id="another-field"),
        pytest.param({"completed": False, "updated_at": "2020-01-01T00:00:00Z"}, "updated_at", id="server-owned-field"),
    ],
)
def test_complete_without_a_json_boolean_is_400_naming_the_field_and_changes_nothing(client, alice, task, body, field):
    response = client.patch(alice.tasks_url(task["id"]) + "/complete", json=body, headers=alice.headers)
    assert error_fields(response) == [field]
    assert_nothing_changed(client, alice, task)


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize(
    "content",
    [b"{", b'{"title": "t",}', b"[]", b'"x"', b"null", b"", b'{"title": "\xff"}'],
    ids=["malformed", "trailing-comma", "array", "string", "null", "empty", "invalid-utf8"],
)
def test_a_body_that_is_not_a_json_object_is_400_and_changes_nothing(client, alice, task, route, content):
    response = call(client, route, alice.id, task["id"], {**alice.headers, **JSON}, content=content)
    assert error_fields(response) == ["body"]
    assert_nothing_changed(client, alice, task)


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_a_lone_surrogate_in_a_string_is_400_not_500(client, alice, task, route):
    content = b'{"title": "\\ud83d", "completed": true}' if route != "complete" else b'{"completed": "\\ud83d"}'
    response = call(client, route, alice.id, task["id"], {**alice.headers, **JSON}, content=content)
    problem(response, 400)
    assert_nothing_changed(client, alice, task)


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
    ids=["text-plain", "form", "multipart", "missing"],
)
def test_a_json_body_without_the_json_content_type_is_400_and_changes_nothing(client, alice, task, route, content_type):
    _, _, _, good_body = ROUTES[route]
    headers = dict(alice.headers) if content_type is None else {**alice.headers, "Content-Type": content_type}
    response = call(client, route, alice.id, task["id"], headers, content=json.dumps(good_body))
    problem(response, 400)
    assert_nothing_changed(client, alice, task)


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_a_body_over_1_mib_is_413_and_changes_nothing(client, alice, task, route):
    content = '{"title": "t", "description": "' + "x" * MIB + '"}'
    response = call(client, route, alice.id, task["id"], {**alice.headers, **JSON}, content=content)
    problem(response, 413)
    assert_nothing_changed(client, alice, task)


def test_a_body_of_exactly_1_mib_is_read(client, alice):
    content = '{"title": "padded"' + " " * (MIB - len('{"title": "padded"}')) + "}"
    assert len(content.encode()) == MIB
    response = client.post(alice.tasks_url(), content=content, headers={**alice.headers, **JSON})
    assert response.status_code == 201
    assert response.json()["title"] == "padded"


@pytest.mark.parametrize(
    ("title", "stored"),
    [(" " + "x" * 255 + " ", "x" * 255), ("é" * 255, "é" * 255), ("🙂" * 255, "🙂" * 255)],
    ids=["255-ascii-after-trim", "255-accented", "255-emoji"],
)
def test_a_title_of_255_characters_is_accepted(client, alice, title, stored):
    response = client.post(alice.tasks_url(), json={"title": title}, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["title"] == stored
    assert alice_sees(client, alice, response.json()["id"])["title"] == stored


@pytest.mark.parametrize("description", ["x" * 10_000, "🙂" * 10_000], ids=["ascii", "emoji"])
def test_a_description_of_10000_characters_is_accepted(client, alice, description):
    response = client.post(alice.tasks_url(), json={"title": "t", "description": description}, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert alice_sees(client, alice, response.json()["id"])["description"] == description
