"""Tasks, version 2, as a frontend sees them: priority, due dates, tags, the list query, ETags.

Written from the contract (sections Endpoints, Tasks (v2), Conditional requests (v2)) and the
decisions where it leaves room: due_at is answered in UTC with microseconds, a bad list
parameter is a 400 naming it, the next link is relative, If-Match compares strongly and
If-None-Match weakly (RFC 9110). Every test runs on SQLite and on PostgreSQL.
"""

import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from jsonschema import Draft202012Validator

import conftest
from conftest import fresh_postgres_database, link, running_service, service_environment
from test_tasks import error_fields, problem

PROBLEM = "application/problem+json"
FRONTEND = "http://localhost:3000"
JSON = {"Content-Type": "application/json"}
TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "priority", "due_at", "tags",
    "recurrence", "time_zone", "reminders", "series_id", "next_id", "created_at", "updated_at",
}
UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e\x80-\xff]*"')
NEXT_LINK = re.compile(r'<([^>]*)>;\s*rel="next"')

# Fixed instants, far from now, for the filters and sorts.
PAST = "2020-01-01T00:00:00.000000Z"
FUTURE = "2100-01-01T00:00:00.000000Z"
LATER = "2100-06-01T00:00:00.000000Z"

# The routes that write one task: (method, what follows the task id, a good body).
WRITES = {
    "replace": ("PUT", "", {"title": "replaced"}),
    "update": ("PATCH", "", {"title": "patched"}),
    "complete": ("PATCH", "/complete", {"completed": True}),
    "delete": ("DELETE", "", None),
}
BODY_WRITES = [name for name, (_, _, body) in WRITES.items() if body is not None]


def in_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def etag(response) -> str:
    """The response's ETag, after checking it is a strong one."""
    value = response.headers["etag"]
    assert STRONG_ETAG.fullmatch(value), value
    return value


def write(client, user, task_id, route, headers=None, path_user=None, **body):
    """Send a write route for the user's task; json= or content= replaces its good body."""
    method, suffix, good_body = WRITES[route]
    if good_body is not None and not body:
        body = {"json": good_body}
    path = (path_user or user).tasks_url(task_id) + suffix
    return client.request(method, path, headers={**user.headers, **(headers or {})}, **body)


def get(client, user, task_id, **headers):
    return client.get(user.tasks_url(task_id), headers={**user.headers, **headers})


def alice_sees(client, alice, task_id):
    response = get(client, alice, task_id)
    assert response.status_code == 200, response.text
    return response.json()


def list_tasks(client, user, params=()):
    """GET the user's list with these query parameters (a list of pairs, so they may repeat)."""
    return client.get(user.tasks_url(), params=list(params), headers=user.headers)


def titles(client, user, params=()) -> list[str]:
    response = list_tasks(client, user, params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return [task["title"] for task in response.json()]


def next_query(response, user) -> list[tuple[str, str]]:
    """The query of the response's `Link: <…>; rel="next"`, as sorted pairs, after checking its path."""
    match = NEXT_LINK.fullmatch(response.headers["link"])
    assert match, response.headers["link"]
    url = urlsplit(match[1])
    assert (url.scheme, url.netloc, url.path) == ("", "", user.tasks_url())
    return sorted(parse_qsl(url.query, keep_blank_values=True))


def with_offset(params, offset: int) -> list[tuple[str, str]]:
    return sorted([(name, value) for name, value in params if name != "offset"] + [("offset", str(offset))])


@pytest.fixture
def task(create_task):
    """Alice's task, with every v2 field set away from its default."""
    return create_task(title="original title", description="original notes", priority="high", due_at="2026-12-24T17:00:00Z", tags=["work", "home"])


@pytest.fixture
def missing_task_id(create_task, client, alice):
    """The id of a task alice had and deleted."""
    task_id = create_task()["id"]
    assert client.delete(alice.tasks_url(task_id), headers=alice.headers).status_code == 204
    return task_id


# ---------------------------------------------------------------------------------------
# The new fields: defaults, values kept, normalised answers
# ---------------------------------------------------------------------------------------


def test_a_task_has_the_v2_fields_and_their_defaults(client, alice):
    response = client.post(alice.tasks_url(), json={"title": "buy milk"}, headers=alice.headers)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert (task["priority"], task["due_at"], task["tags"]) == ("medium", None, [])
    assert alice_sees(client, alice, task["id"]) == task


@pytest.mark.parametrize("priority", ["low", "medium", "high"])
def test_create_keeps_each_priority(client, alice, priority):
    response = client.post(alice.tasks_url(), json={"title": "t", "priority": priority}, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["priority"] == priority
    assert alice_sees(client, alice, response.json()["id"])["priority"] == priority


def test_every_task_in_the_list_has_the_v2_fields(client, alice, task, create_task):
    other = create_task(title="defaults")
    response = list_tasks(client, alice)
    assert response.json() == [other, task]
    assert all(set(listed) == TASK_FIELDS for listed in response.json())


DUE_AT_ANSWERS = [
    pytest.param("2026-12-24T17:00:00Z", "2026-12-24T17:00:00.000000Z", id="z"),
    pytest.param("2026-12-24T17:00:00+00:00", "2026-12-24T17:00:00.000000Z", id="zero-offset"),
    pytest.param("2026-12-24T18:00:00+01:00", "2026-12-24T17:00:00.000000Z", id="plus-one-hour"),
    pytest.param("2026-12-24T12:00:00-05:00", "2026-12-24T17:00:00.000000Z", id="minus-five-hours"),
    pytest.param("2026-12-25T04:30:00+11:30", "2026-12-24T17:00:00.000000Z", id="half-hour-offset-back-a-day"),
    pytest.param("2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00.000000Z", id="into-the-next-year"),
    pytest.param("2026-12-24T17:00:00.5Z", "2026-12-24T17:00:00.500000Z", id="tenths"),
    pytest.param("2026-12-24T17:00:00.123Z", "2026-12-24T17:00:00.123000Z", id="milliseconds"),
    pytest.param("2026-12-24T17:00:00.123456Z", "2026-12-24T17:00:00.123456Z", id="microseconds"),
    pytest.param("2026-12-24T18:00:00.000001+01:00", "2026-12-24T17:00:00.000001Z", id="microseconds-and-offset"),
    pytest.param("2028-02-29T23:59:59Z", "2028-02-29T23:59:59.000000Z", id="leap-day"),
]


@pytest.mark.parametrize(("sent", "answered"), DUE_AT_ANSWERS)
def test_due_at_is_answered_in_utc_with_microseconds(client, alice, sent, answered):
    response = client.post(alice.tasks_url(), json={"title": "t", "due_at": sent}, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["due_at"] == answered
    assert alice_sees(client, alice, response.json()["id"])["due_at"] == answered


@pytest.mark.parametrize("route", ["replace", "update"])
def test_put_and_patch_answer_due_at_in_utc_too(client, alice, task, route):
    response = write(client, alice, task["id"], route, json={"title": "t", "due_at": "2026-12-24T18:00:00.25+01:00"})
    assert response.status_code == 200, response.text
    assert response.json()["due_at"] == "2026-12-24T17:00:00.250000Z"
    assert alice_sees(client, alice, task["id"])["due_at"] == "2026-12-24T17:00:00.250000Z"


TAG_ANSWERS = [
    pytest.param([], [], id="none"),
    pytest.param(["b", "c", "a"], ["a", "b", "c"], id="sorted"),
    pytest.param(["Work", "HOME"], ["home", "work"], id="lower-cased"),
    pytest.param([" \t work \n", "home "], ["home", "work"], id="trimmed"),
    pytest.param(["work", "Work", " WORK "], ["work"], id="duplicates-after-normalising-collapse"),
    pytest.param(["to do"], ["to do"], id="inner-space-kept"),
    pytest.param([" " + "x" * 32 + " "], ["x" * 32], id="32-characters-after-trimming"),
    pytest.param(["🙂" * 32], ["🙂" * 32], id="32-emoji"),
    pytest.param(["ÉTÉ"], ["été"], id="non-ascii-lower-cased"),
    pytest.param([f"tag{n:02}" for n in range(20)], [f"tag{n:02}" for n in range(20)], id="20-distinct"),
    pytest.param([f"TAG{n:02}" for n in range(20)] + [f"tag{n:02}" for n in range(20)], [f"tag{n:02}" for n in range(20)], id="40-that-are-20-distinct"),
]


@pytest.mark.parametrize(("sent", "answered"), TAG_ANSWERS)
def test_tags_are_trimmed_lower_cased_deduplicated_and_sorted(client, alice, sent, answered):
    response = client.post(alice.tasks_url(), json={"title": "t", "tags": sent}, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["tags"] == answered
    assert alice_sees(client, alice, response.json()["id"])["tags"] == answered


# ---------------------------------------------------------------------------------------
# PUT resets, PATCH changes a subset, complete leaves them
# ---------------------------------------------------------------------------------------


def test_put_replaces_the_v2_fields_it_is_given(client, alice, task):
    body = {"title": "replaced", "priority": "low", "due_at": "2027-01-01T10:00:00+02:00", "tags": ["New"]}
    response = client.put(alice.tasks_url(task["id"]), json=body, headers=alice.headers)
    assert response.status_code == 200, response.text
    expected = {**task, "title": "replaced", "description": None, "completed": False, "priority": "low", "due_at": "2027-01-01T08:00:00.000000Z", "tags": ["new"]}
    assert response.json() == {**expected, "updated_at": response.json()["updated_at"]}
    assert alice_sees(client, alice, task["id"]) == response.json()


def test_put_resets_omitted_priority_due_at_and_tags_to_their_defaults(client, alice, task):
    response = client.put(alice.tasks_url(task["id"]), json={"title": "replaced"}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["priority"], response.json()["due_at"], response.json()["tags"]) == ("medium", None, [])
    assert alice_sees(client, alice, task["id"]) == response.json()


@pytest.mark.parametrize(
    ("changes", "answered"),
    [
        pytest.param({"priority": "low"}, {"priority": "low"}, id="priority"),
        pytest.param({"due_at": "2027-03-01T09:00:00+01:00"}, {"due_at": "2027-03-01T08:00:00.000000Z"}, id="due_at"),
        pytest.param({"due_at": None}, {"due_at": None}, id="due_at-null-clears-it"),
        pytest.param({"tags": ["Errand", "home"]}, {"tags": ["errand", "home"]}, id="tags"),
        pytest.param({"tags": []}, {"tags": []}, id="tags-emptied"),
        pytest.param({"title": "renamed"}, {"title": "renamed"}, id="title-alone"),
        pytest.param({"priority": "medium", "due_at": None, "tags": ["a"]}, {"priority": "medium", "due_at": None, "tags": ["a"]}, id="all-three"),
        pytest.param({"completed": True, "tags": ["b"]}, {"completed": True, "tags": ["b"]}, id="with-a-v1-field"),
    ],
)
def test_patch_changes_only_the_fields_it_names(client, alice, task, changes, answered):
    response = client.patch(alice.tasks_url(task["id"]), json=changes, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {**task, **answered, "updated_at": response.json()["updated_at"]}
    assert alice_sees(client, alice, task["id"]) == response.json()


def test_complete_leaves_priority_due_at_and_tags(client, alice, task):
    response = client.patch(alice.tasks_url(task["id"]) + "/complete", json={"completed": True}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {**task, "completed": True, "updated_at": response.json()["updated_at"]}


@pytest.mark.parametrize("field", ["priority", "due_at", "tags"])
def test_complete_takes_no_other_field(client, alice, task, field):
    body = {"completed": True, field: task[field]}
    response = client.patch(alice.tasks_url(task["id"]) + "/complete", json=body, headers=alice.headers)
    assert error_fields(response) == [field]
    assert alice_sees(client, alice, task["id"]) == task


# ---------------------------------------------------------------------------------------
# Validation of the new fields: a 400 naming the field, and nothing changes
# ---------------------------------------------------------------------------------------

BAD_PRIORITIES = [
    pytest.param("High", id="capitalised"),
    pytest.param("HIGH", id="upper-case"),
    pytest.param(" high", id="padded"),
    pytest.param("urgent", id="unknown"),
    pytest.param("", id="empty"),
    pytest.param("high,low", id="two"),
    pytest.param(1, id="number"),
    pytest.param(True, id="boolean"),
    pytest.param(["high"], id="array"),
    pytest.param(None, id="null"),
]

BAD_DUE_ATS = [
    pytest.param("2026-12-24", id="date-alone"),
    pytest.param("2026-12-24T17:00:00", id="no-offset"),
    pytest.param("2026-12-24T17:00:00.5", id="fraction-no-offset"),
    pytest.param("2026-12-24T18:00:00+0100", id="offset-without-colon"),
    pytest.param("2026-12-24T18:00:00+01", id="offset-without-minutes"),
    pytest.param("2026-12-24T17:00Z", id="no-seconds"),
    pytest.param("2026-12-24T17:00:00.Z", id="dot-without-digits"),
    pytest.param("20261224T170000Z", id="iso-basic-format"),
    pytest.param("2026-W52-4T17:00:00Z", id="iso-week-date"),
    pytest.param("17:00:00Z", id="time-alone"),
    pytest.param("tomorrow", id="word"),
    pytest.param("", id="empty"),
    pytest.param("2026-13-01T00:00:00Z", id="month-13"),
    pytest.param("2026-02-30T00:00:00Z", id="february-30"),
    pytest.param("2026-12-24T24:00:00Z", id="hour-24"),
    pytest.param("2026-12-24T17:60:00Z", id="minute-60"),
    pytest.param("9999-12-31T23:00:00-05:00", id="past-year-9999-in-utc"),
    pytest.param("0001-01-01T00:30:00+01:00", id="before-year-1-in-utc"),
    pytest.param("2026-12-24T17:00:00Z\u0000", id="nul"),
    pytest.param(1798131600, id="number"),
    pytest.param(True, id="boolean"),
    pytest.param(["2026-12-24T17:00:00Z"], id="array"),
    pytest.param({"at": "2026-12-24T17:00:00Z"}, id="object"),
]

BAD_TAGS = [
    pytest.param("work", id="string"),
    pytest.param({"work": True}, id="object"),
    pytest.param(None, id="null"),
    pytest.param([1], id="number-item"),
    pytest.param([None], id="null-item"),
    pytest.param([["work"]], id="array-item"),
    pytest.param(["work", 7], id="second-item-a-number"),
    pytest.param([""], id="empty-tag"),
    pytest.param([" \t "], id="blank-tag"),
    pytest.param(["x" * 33], id="33-characters"),
    pytest.param([" " + "x" * 33 + " "], id="33-characters-after-trimming"),
    pytest.param(["🙂" * 33], id="33-emoji"),
    pytest.param(["a,b"], id="comma"),
    pytest.param([","], id="comma-alone"),
    pytest.param(["a\u0000b"], id="nul"),
    pytest.param([f"tag{n:02}" for n in range(21)], id="21-distinct"),
    pytest.param([f"tag{n:02}" for n in range(20)] + ["TAG00", "extra"], id="21-distinct-after-normalising"),
]


def bad_body_cases():
    for case in BAD_PRIORITIES:
        yield pytest.param({"title": "t", "priority": case.values[0]}, "priority", id=f"priority-{case.id}")
    for case in BAD_DUE_ATS:
        yield pytest.param({"title": "t", "due_at": case.values[0]}, "due_at", id=f"due_at-{case.id}")
    for case in BAD_TAGS:
        yield pytest.param({"title": "t", "tags": case.values[0]}, "tags", id=f"tags-{case.id}")


@pytest.mark.parametrize("route", ["create", "replace", "update"])
@pytest.mark.parametrize(("body", "field"), list(bad_body_cases()))
def test_a_bad_v2_field_is_400_naming_it_and_changes_nothing(client, alice, task, route, body, field):
    if route == "create":
        response = client.post(alice.tasks_url(), json=body, headers=alice.headers)
    else:
        response = write(client, alice, task["id"], route, json=body)
    fields = error_fields(response)
    assert all(name.startswith("tags") for name in fields) if field == "tags" else fields == [field]
    assert list_tasks(client, alice).json() == [task]


# ---------------------------------------------------------------------------------------
# The list query: filters
# ---------------------------------------------------------------------------------------


@pytest.fixture
def varied(create_task):
    """Five tasks of alice's, created a to e (so listed e to a), one overdue (a), and one of bob's."""
    create_task(title="a", priority="low", tags=["home"], due_at=PAST)
    create_task(title="b", priority="medium", tags=["work"], due_at=FUTURE)
    create_task(title="c", priority="high", tags=["work", "urgent"], due_at=PAST, completed=True)
    create_task(title="d", priority="high", tags=["home", "work"])
    create_task(title="e", priority="medium", due_at=LATER, completed=True)


FILTERS = [
    pytest.param([], ["e", "d", "c", "b", "a"], id="none"),
    pytest.param([("completed", "true")], ["e", "c"], id="completed"),
    pytest.param([("priority", "high")], ["d", "c"], id="priority-high"),
    pytest.param([("priority", "low")], ["a"], id="priority-low"),
    pytest.param([("priority", "high,medium")], ["e", "d", "c", "b"], id="priority-high-or-medium"),
    pytest.param([("priority", "low,medium,high")], ["e", "d", "c", "b", "a"], id="priority-all-three"),
    pytest.param([("tag", "work")], ["d", "c", "b"], id="tag"),
    pytest.param([("tag", "work"), ("tag", "home")], ["d"], id="two-tags-means-both"),
    pytest.param([("tag", "work"), ("tag", "urgent")], ["c"], id="two-other-tags"),
    pytest.param([("tag", "home"), ("tag", "urgent")], [], id="two-tags-no-task-has-both"),
    pytest.param([("tag", "work"), ("tag", "work")], ["d", "c", "b"], id="one-tag-twice"),
    pytest.param([("tag", "nobody")], [], id="tag-no-task-has"),
    pytest.param([("overdue", "true")], ["a"], id="overdue"),
    pytest.param([("overdue", "false")], ["e", "d", "c", "b"], id="not-overdue"),
    pytest.param([("due_after", FUTURE)], ["e", "b"], id="due-after-is-inclusive"),
    pytest.param([("due_before", FUTURE)], ["c", "a"], id="due-before-is-exclusive"),
    pytest.param([("due_after", PAST), ("due_before", LATER)], ["c", "b", "a"], id="due-between"),
    pytest.param([("completed", "false"), ("priority", "high")], ["d"], id="completed-and-priority"),
    pytest.param([("completed", "true"), ("tag", "work")], ["c"], id="completed-and-tag"),
    pytest.param([("overdue", "false"), ("completed", "false")], ["d", "b"], id="not-overdue-and-not-completed"),
    pytest.param([("priority", "medium,low"), ("tag", "home")], ["a"], id="priorities-and-tag"),
    pytest.param([("q", "d"), ("priority", "high"), ("tag", "home"), ("completed", "false"), ("overdue", "false")], ["d"], id="five-filters"),
]


@pytest.mark.parametrize(("params", "expected"), FILTERS)
def test_the_list_filters(client, alice, bob, create_task, varied, params, expected):
    create_task(user=bob, title="bob's", priority="high", tags=["work", "home"], due_at=PAST)
    assert titles(client, alice, params) == expected


def test_overdue_is_due_before_now_and_not_completed(client, alice, create_task):
    now = datetime.now(UTC)
    create_task(title="just overdue", due_at=in_utc(now - timedelta(minutes=2)))
    create_task(title="done late", due_at=in_utc(now - timedelta(minutes=2)), completed=True)
    create_task(title="due soon", due_at=in_utc(now + timedelta(minutes=2)))
    create_task(title="no due date")
    assert titles(client, alice, [("overdue", "true")]) == ["just overdue"]
    assert titles(client, alice, [("overdue", "false")]) == ["no due date", "due soon", "done late"]


@pytest.fixture
def around_half_past(create_task):
    """Tasks due a microsecond around 17:00:00.5 UTC, created before, at, after, none."""
    create_task(title="before", due_at="2026-12-24T17:00:00.499999Z")
    create_task(title="at", due_at="2026-12-24T18:00:00.5+01:00")
    create_task(title="after", due_at="2026-12-24T17:00:00.500001Z")
    create_task(title="none")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param([("due_after", "2026-12-24T17:00:00.5Z")], ["after", "at"], id="after-includes-the-instant"),
        pytest.param([("due_after", "2026-12-24T12:00:00.500001-05:00")], ["after"], id="after-a-microsecond-later-with-an-offset"),
        pytest.param([("due_before", "2026-12-24T17:00:00.5Z")], ["before"], id="before-excludes-the-instant"),
        pytest.param([("due_before", "2026-12-24T18:00:00.500001+01:00")], ["at", "before"], id="before-a-microsecond-later-with-an-offset"),
        pytest.param([("due_after", "2026-12-24T17:00:00.5Z"), ("due_before", "2026-12-24T17:00:00.500001Z")], ["at"], id="a-window-of-one-microsecond"),
        pytest.param([("due_after", "2026-12-24T17:00:00Z"), ("due_before", "2026-12-24T17:00:01Z")], ["after", "at", "before"], id="a-window-of-one-second"),
        pytest.param([("due_after", "2026-12-25T01:00:00+08:00")], ["after", "at", "before"], id="after-with-a-positive-offset"),
        pytest.param([("due_before", "2026-12-24T17:00:00Z")], [], id="before-all-of-them"),
    ],
)
def test_due_after_and_due_before_compare_instants_to_the_microsecond(client, alice, around_half_past, params, expected):
    assert titles(client, alice, params) == expected


@pytest.fixture
def searchable(create_task):
    """Titles and descriptions holding the characters SQL's LIKE would take for wildcards."""
    for title, description in [
        ("Buy MILK", None),
        ("call mum", "about the Milk order"),
        ("100% sure", None),
        ("100 percent", None),
        ("snake_case", None),
        ("snakeXcase", None),
        ("C:\\temp", None),
        ("C:temp", None),
        ("plain", "nothing here"),
    ]:
        create_task(title=title, description=description)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        pytest.param("milk", ["call mum", "Buy MILK"], id="lower-case-finds-upper-case"),
        pytest.param("MiLk", ["call mum", "Buy MILK"], id="mixed-case"),
        pytest.param("nothing", ["plain"], id="in-the-description"),
        pytest.param("%", ["100% sure"], id="percent"),
        pytest.param("0%", ["100% sure"], id="percent-after-a-digit"),
        pytest.param("%%", [], id="two-percents"),
        pytest.param("_", ["snake_case"], id="underscore"),
        pytest.param("e_c", ["snake_case"], id="underscore-between-letters"),
        pytest.param("\\", ["C:\\temp"], id="backslash"),
        pytest.param(":\\t", ["C:\\temp"], id="backslash-between-characters"),
        pytest.param("\\%", [], id="backslash-percent"),
        pytest.param("\\_", [], id="backslash-underscore"),
        pytest.param("snake", ["snakeXcase", "snake_case"], id="plain-prefix"),
        pytest.param("zzz", [], id="nowhere"),
        pytest.param("'; DROP TABLE tasks; --", [], id="sql-in-the-text"),
        pytest.param("x" * 200, [], id="200-characters"),
        pytest.param("🙂" * 200, [], id="200-emoji"),
    ],
)
def test_q_finds_plain_text_case_insensitively_in_the_title_or_the_description(client, alice, searchable, q, expected):
    assert titles(client, alice, [("q", q)]) == expected
    assert len(titles(client, alice)) == 9


def test_q_is_case_insensitive_beyond_ascii(client, alice, create_task):
    create_task(title="Crème Brûlée")
    create_task(title="ÉTÉ", description="Straße")
    assert titles(client, alice, [("q", "CRÈME")]) == ["Crème Brûlée"]
    assert titles(client, alice, [("q", "été")]) == ["ÉTÉ"]


@pytest.mark.parametrize(
    "title",
    ["ΟΔΟΣ", "İstanbul", "Crème Brûlée"],
    ids=["greek-final-sigma", "dotted-capital-i", "accents"],
)
def test_q_finds_a_title_by_its_own_text(client, alice, create_task, title):
    """Whatever lower-casing the search applies, it applies the same to the title and to q."""
    create_task(title=title)
    assert titles(client, alice, [("q", title)]) == [title]


@pytest.mark.parametrize(
    ("title", "q"),
    [("ΟΔΟΣΗΜΑΝΣΗ", "ΟΔΟΣ"), ("ΑΣΑ", "ΑΣ"), ("İstanbul'da", "İSTANBUL"), ("Straßenbahn", "STRAß")],
    ids=["greek-sigma-inside-a-word", "greek-sigma-second-letter", "dotted-capital-i", "sharp-s"],
)
def test_q_finds_the_start_of_a_longer_word(client, alice, create_task, title, q):
    """A letter at the end of q may be inside a word of the title: q's case must fold as the title's does."""
    create_task(title=title)
    assert titles(client, alice, [("q", q)]) == [title]


# The same searches beyond ASCII on SQLite and on PostgreSQL databases of either collation and
# ctype (under C, PostgreSQL's lower() folds A to Z only): every database answers alike.
BEYOND_ASCII_TASKS = [
    ("Crème Brûlée", None),
    ("ÉTÉ", "Straße nach Süden"),
    ("ΟΔΟΣ", None),
    ("ΟΔΟΣΗΜΑΝΣΗ", None),
    ("ΑΣΑ", None),
    ("İstanbul'da", None),
    ("Straßenbahn", None),
]
BEYOND_ASCII_SEARCHES = [
    pytest.param("CRÈME", ["Crème Brûlée"], id="accents-upper-case"),
    pytest.param("crème brûlée", ["Crème Brûlée"], id="accents-lower-case"),
    pytest.param("été", ["ÉTÉ"], id="accented-capitals"),
    pytest.param("SÜDEN", ["ÉTÉ"], id="umlaut-in-the-description"),
    pytest.param("STRAß", ["ÉTÉ", "Straßenbahn"], id="sharp-s"),
    pytest.param("ΟΔΟΣ", ["ΟΔΟΣ", "ΟΔΟΣΗΜΑΝΣΗ"], id="greek-sigma-last-in-q"),
    pytest.param("οδος", ["ΟΔΟΣ", "ΟΔΟΣΗΜΑΝΣΗ"], id="greek-final-sigma-typed"),
    pytest.param("ΑΣ", ["ΑΣΑ"], id="greek-sigma-second-letter"),
    pytest.param("İSTANBUL", ["İstanbul'da"], id="dotted-capital-i"),
    pytest.param("istanbul", ["İstanbul'da"], id="dotted-capital-i-found-by-a-plain-i"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql-C", "postgresql-C.UTF-8"])
def beyond_ascii(request, issuer, tmp_path_factory):
    """A service of its own on a new database of this kind and locale, one user's
    BEYOND_ASCII_TASKS in it: (client, user)."""
    database, _, locale = request.param.partition("-")
    if database == "postgresql" and not conftest.TEST_DATABASE_URL:
        pytest.skip(f"no PostgreSQL to test against: TEST_DATABASE_URL is unset and the server is {conftest.NO_POSTGRESQL} (Debian: postgresql)")
    directory = tmp_path_factory.mktemp(f"search-{request.param}")
    with ExitStack() as stack:
        database_url = f"sqlite:///{directory / 'todo.db'}" if database == "sqlite" else stack.enter_context(fresh_postgres_database(locale))
        service = stack.enter_context(running_service(service_environment(database_url, issuer), directory / "service.log"))
        if locale:
            assert [tuple(row) for row in service.sql("SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()")] == [(locale, locale)]
        user = link(service, issuer, f"searcher-{request.param}")
        client = stack.enter_context(httpx.Client(base_url=service.url, timeout=30))
        for title, description in BEYOND_ASCII_TASKS:
            response = client.post(user.tasks_url(), json={"title": title, "description": description}, headers=user.headers)
            assert response.status_code == 201, response.text
        yield client, user


@pytest.mark.parametrize(("q", "expected"), BEYOND_ASCII_SEARCHES)
def test_q_is_case_insensitive_beyond_ascii_alike_on_every_database_and_locale(beyond_ascii, q, expected):
    client, user = beyond_ascii
    assert sorted(titles(client, user, [("q", q)])) == sorted(expected)


@pytest.mark.parametrize("name", ["q", "tag"])
def test_a_nul_in_a_text_filter_is_a_400_or_finds_nothing_never_a_500(client, alice, create_task, name):
    create_task(title="a\\b", tags=["ab"])
    response = list_tasks(client, alice, [(name, "a\u0000b")])
    if response.status_code == 400:
        assert error_fields(response)[0] == name
    else:
        assert response.status_code == 200, response.text
        assert response.json() == []


# ---------------------------------------------------------------------------------------
# The list query: sort
# ---------------------------------------------------------------------------------------


@pytest.fixture
def sortable(client, alice, create_task):
    """Six tasks, created 0 to 5, with ties in title, priority and due_at; 2 then 0 updated last."""
    specs = [
        ("cherry", "high", FUTURE),
        ("apple", "low", None),
        ("banana", "medium", PAST),
        ("apple", "high", FUTURE),
        ("date", "medium", None),
        ("banana", "low", LATER),
    ]
    ids = [create_task(title=title, priority=priority, due_at=due_at)["id"] for title, priority, due_at in specs]
    for index in (2, 0):
        response = client.patch(alice.tasks_url(ids[index]), json={"description": "touched"}, headers=alice.headers)
        assert response.status_code == 200, response.text
    return ids


SORTS = [
    pytest.param(None, [5, 4, 3, 2, 1, 0], id="default-newest-first"),
    pytest.param("-created_at", [5, 4, 3, 2, 1, 0], id="-created_at"),
    pytest.param("created_at", [0, 1, 2, 3, 4, 5], id="created_at"),
    pytest.param("updated_at", [1, 3, 4, 5, 2, 0], id="updated_at"),
    pytest.param("-updated_at", [0, 2, 5, 4, 3, 1], id="-updated_at"),
    pytest.param("due_at", [2, 0, 3, 5, 1, 4], id="due_at-ties-by-id-no-due-date-last"),
    pytest.param("-due_at", [5, 3, 0, 2, 4, 1], id="-due_at-ties-by-id-descending-no-due-date-last"),
    pytest.param("priority", [1, 5, 2, 4, 0, 3], id="priority-low-medium-high"),
    pytest.param("-priority", [3, 0, 4, 2, 5, 1], id="-priority-high-medium-low"),
    pytest.param("title", [1, 3, 2, 5, 0, 4], id="title"),
    pytest.param("-title", [4, 0, 5, 2, 3, 1], id="-title"),
]


@pytest.mark.parametrize(("sort", "order"), SORTS)
def test_sort_orders_by_its_key_then_by_id_in_the_same_direction(client, alice, sortable, sort, order):
    response = list_tasks(client, alice, [] if sort is None else [("sort", sort)])
    assert response.status_code == 200, response.text
    assert [task["id"] for task in response.json()] == [sortable[index] for index in order]


@pytest.mark.parametrize(("sort", "order"), SORTS)
def test_pages_of_a_sort_put_together_are_the_whole_sort(client, alice, sortable, sort, order):
    pages = []
    for offset in (0, 4):
        params = [("limit", "4"), ("offset", str(offset))] + ([] if sort is None else [("sort", sort)])
        pages += [task["id"] for task in list_tasks(client, alice, params).json()]
    assert pages == [sortable[index] for index in order]


@pytest.mark.parametrize(
    ("sort", "ascending"),
    [("created_at", True), ("-created_at", False), (None, False), ("updated_at", True), ("-updated_at", False)],
    ids=["created_at", "-created_at", "default", "updated_at", "-updated_at"],
)
def test_equal_timestamps_sort_by_id_in_the_same_direction(client, alice, service, create_task, sort, ascending):
    ids = [create_task(title=f"task {n}")["id"] for n in range(4)]
    service.sql("UPDATE tasks SET created_at = (SELECT MIN(created_at) FROM tasks), updated_at = (SELECT MIN(updated_at) FROM tasks)")
    response = list_tasks(client, alice, [] if sort is None else [("sort", sort)])
    assert [task["id"] for task in response.json()] == (ids if ascending else ids[::-1])


def test_sort_and_filters_combine(client, alice, sortable):
    response = list_tasks(client, alice, [("priority", "high,low"), ("sort", "-due_at")])
    assert [task["id"] for task in response.json()] == [sortable[index] for index in (5, 3, 0, 1)]


# ---------------------------------------------------------------------------------------
# The list query: a bad parameter is a 400 naming it
# ---------------------------------------------------------------------------------------

BAD_QUERIES = [
    # unknown parameters
    pytest.param([("foo", "1")], "foo", id="unknown"),
    pytest.param([("Completed", "true")], "Completed", id="known-name-in-another-case"),
    pytest.param([("tags", "work")], "tags", id="tags-for-tag"),
    pytest.param([("page", "2")], "page", id="page"),
    pytest.param([("completed", "true"), ("search", "x")], "search", id="unknown-beside-a-good-one"),
    # repeated where one is allowed
    pytest.param([("completed", "true"), ("completed", "true")], "completed", id="completed-twice"),
    pytest.param([("priority", "high"), ("priority", "low")], "priority", id="priority-twice"),
    pytest.param([("q", "a"), ("q", "b")], "q", id="q-twice"),
    pytest.param([("due_after", PAST), ("due_after", PAST)], "due_after", id="due_after-twice"),
    pytest.param([("due_before", PAST), ("due_before", PAST)], "due_before", id="due_before-twice"),
    pytest.param([("overdue", "true"), ("overdue", "true")], "overdue", id="overdue-twice"),
    pytest.param([("sort", "title"), ("sort", "priority")], "sort", id="sort-twice"),
    pytest.param([("limit", "5"), ("limit", "5")], "limit", id="limit-twice"),
    pytest.param([("offset", "0"), ("offset", "5")], "offset", id="offset-twice"),
    # bad values
    pytest.param([("completed", "True")], "completed", id="completed-capitalised"),
    pytest.param([("priority", "High")], "priority", id="priority-capitalised"),
    pytest.param([("priority", "urgent")], "priority", id="priority-unknown"),
    pytest.param([("priority", "")], "priority", id="priority-empty"),
    pytest.param([("priority", "high,")], "priority", id="priority-trailing-comma"),
    pytest.param([("priority", ",high")], "priority", id="priority-leading-comma"),
    pytest.param([("priority", "high,,low")], "priority", id="priority-empty-between-commas"),
    pytest.param([("priority", "high,urgent")], "priority", id="priority-one-unknown-of-two"),
    pytest.param([("priority", "high, low")], "priority", id="priority-space-after-comma"),
    pytest.param([("tag", "")], "tag", id="tag-empty"),
    pytest.param([("tag", "x" * 33)], "tag", id="tag-33-characters"),
    pytest.param([("tag", "a,b")], "tag", id="tag-with-a-comma"),
    pytest.param([("tag", "a"), ("tag", "")], "tag", id="second-tag-empty"),
    pytest.param([("q", "")], "q", id="q-empty"),
    pytest.param([("q", "x" * 201)], "q", id="q-201-characters"),
    pytest.param([("q", "🙂" * 201)], "q", id="q-201-emoji"),
    pytest.param([("due_after", "2026-12-24")], "due_after", id="due_after-date-alone"),
    pytest.param([("due_after", "2026-12-24T17:00:00")], "due_after", id="due_after-no-offset"),
    pytest.param([("due_after", "2026-12-24T18:00:00+0100")], "due_after", id="due_after-offset-without-colon"),
    pytest.param([("due_after", "2026-02-30T00:00:00Z")], "due_after", id="due_after-february-30"),
    pytest.param([("due_after", "tomorrow")], "due_after", id="due_after-word"),
    pytest.param([("due_after", "")], "due_after", id="due_after-empty"),
    pytest.param([("due_before", "2026-12-24")], "due_before", id="due_before-date-alone"),
    pytest.param([("due_before", "1798131600")], "due_before", id="due_before-number"),
    pytest.param([("due_before", "")], "due_before", id="due_before-empty"),
    pytest.param([("overdue", "yes")], "overdue", id="overdue-yes"),
    pytest.param([("overdue", "1")], "overdue", id="overdue-1"),
    pytest.param([("overdue", "True")], "overdue", id="overdue-capitalised"),
    pytest.param([("overdue", "")], "overdue", id="overdue-empty"),
    pytest.param([("sort", "Title")], "sort", id="sort-capitalised"),
    pytest.param([("sort", "-Priority")], "sort", id="sort-descending-capitalised"),
    pytest.param([("sort", "name")], "sort", id="sort-unknown-key"),
    pytest.param([("sort", "id")], "sort", id="sort-by-id"),
    pytest.param([("sort", "description")], "sort", id="sort-by-description"),
    pytest.param([("sort", "-")], "sort", id="sort-minus-alone"),
    pytest.param([("sort", "--title")], "sort", id="sort-two-minuses"),
    pytest.param([("sort", "+title")], "sort", id="sort-plus"),
    pytest.param([("sort", "title,priority")], "sort", id="sort-two-keys"),
    pytest.param([("sort", "title desc")], "sort", id="sort-sql-direction"),
    pytest.param([("sort", "title; DROP TABLE tasks")], "sort", id="sort-sql"),
    pytest.param([("sort", "")], "sort", id="sort-empty"),
    pytest.param([("limit", "0")], "limit", id="limit-0"),
    pytest.param([("limit", "501")], "limit", id="limit-501"),
    pytest.param([("offset", "-1")], "offset", id="offset-negative"),
]


@pytest.mark.parametrize(("params", "field"), BAD_QUERIES)
def test_a_bad_list_parameter_is_400_naming_it(client, alice, params, field):
    response = list_tasks(client, alice, params)
    assert error_fields(response)[0] == field


def test_the_list_still_works_after_sql_in_the_query(client, alice, create_task):
    task = create_task()
    list_tasks(client, alice, [("sort", "title; DROP TABLE tasks")])
    list_tasks(client, alice, [("q", "x'); DELETE FROM tasks; --")])
    list_tasks(client, alice, [("tag", "x'); DELETE FROM tasks; --")])
    assert list_tasks(client, alice).json() == [task]


# ---------------------------------------------------------------------------------------
# X-Total-Count and the next link
# ---------------------------------------------------------------------------------------


def test_an_empty_list_has_a_total_of_0_and_no_next_link(client, alice):
    response = list_tasks(client, alice)
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["x-total-count"] == "0"
    assert "link" not in response.headers


@pytest.mark.parametrize(
    ("params", "count", "total"),
    [
        pytest.param([], 5, "5", id="no-query"),
        pytest.param([("limit", "2")], 2, "5", id="limit"),
        pytest.param([("limit", "2"), ("offset", "4")], 1, "5", id="last-page"),
        pytest.param([("offset", "9")], 0, "5", id="past-the-end"),
        pytest.param([("priority", "high,medium")], 4, "4", id="filtered"),
        pytest.param([("priority", "high,medium"), ("limit", "1"), ("offset", "1")], 1, "4", id="filtered-and-paged"),
        pytest.param([("tag", "work"), ("sort", "title"), ("limit", "1")], 1, "3", id="tag-sorted-and-paged"),
        pytest.param([("q", "nothing matches this")], 0, "0", id="nothing-matches"),
    ],
)
def test_x_total_count_counts_the_matching_tasks_before_limit_and_offset(client, alice, varied, params, count, total):
    response = list_tasks(client, alice, params)
    assert response.status_code == 200, response.text
    assert len(response.json()) == count
    assert response.headers["x-total-count"] == total


@pytest.mark.parametrize(
    ("limit", "offset", "next_offset"),
    [
        pytest.param(2, 0, 2, id="first-page"),
        pytest.param(2, 2, 4, id="middle-page"),
        pytest.param(4, 0, 4, id="one-left-after"),
        pytest.param(1, 3, 4, id="second-to-last"),
        pytest.param(2, 4, None, id="last-page"),
        pytest.param(5, 0, None, id="exactly-all"),
        pytest.param(1, 4, None, id="the-last-one"),
        pytest.param(2, 9, None, id="past-the-end"),
    ],
)
def test_a_next_link_comes_exactly_when_more_follow(client, alice, varied, limit, offset, next_offset):
    params = [("limit", str(limit)), ("offset", str(offset))]
    response = list_tasks(client, alice, params)
    assert response.status_code == 200, response.text
    if next_offset is None:
        assert "link" not in response.headers
    else:
        assert next_query(response, alice) == with_offset(params, next_offset)


def test_the_next_link_keeps_every_filter_and_the_sort(client, alice, create_task):
    for n in range(4):
        create_task(title=f"due {n}", priority="high", tags=["a", "b"], due_at=f"2099-01-0{n + 1}T00:00:00Z", description="x y")
    params = [
        ("completed", "false"),
        ("priority", "high,medium"),
        ("tag", "a"),
        ("tag", "b"),
        ("q", "Y"),
        ("due_after", "2098-12-31T23:00:00-01:00"),
        ("due_before", "2099-02-01T00:00:00Z"),
        ("overdue", "false"),
        ("sort", "-due_at"),
        ("limit", "2"),
        ("offset", "1"),
    ]
    response = list_tasks(client, alice, params)
    assert [task["title"] for task in response.json()] == ["due 2", "due 1"]
    assert response.headers["x-total-count"] == "4"
    assert next_query(response, alice) == with_offset(params, 3)


def test_the_next_link_carries_unusual_characters_in_q_intact(client, alice, create_task):
    q = "a&b=c #1+% é/?"
    for n in range(3):
        create_task(title=f"{q} {n}")
    params = [("q", q), ("limit", "1")]
    response = list_tasks(client, alice, params)
    assert next_query(response, alice) == with_offset(params, 1)


def test_following_the_next_links_visits_every_matching_task_once_in_order(client, alice, sortable):
    params = [("sort", "due_at"), ("limit", "2"), ("priority", "low,medium,high")]
    response = list_tasks(client, alice, params)
    seen = []
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["x-total-count"] == "6"
        seen += [task["id"] for task in response.json()]
        if "link" not in response.headers:
            break
        response = client.get(NEXT_LINK.fullmatch(response.headers["link"])[1], headers=alice.headers)
    assert seen == [sortable[index] for index in (2, 0, 3, 5, 1, 4)]


def send_together(service, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send every (method, path, options) at once from threads, each on its own connection."""
    barrier = threading.Barrier(len(requests))

    def send(method, path, options):
        with httpx.Client(base_url=service.url, timeout=60) as client:
            client.get("/healthz")  # connect before the barrier, so the requests leave together
            barrier.wait()
            return client.request(method, path, **options)

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(send, *request) for request in requests]
        return [future.result() for future in futures]


def test_the_default_page_of_100_has_a_next_link_to_the_rest(client, service, alice):
    headers = alice.headers
    for start in range(0, 101, 34):
        creates = [("POST", alice.tasks_url(), {"json": {"title": f"task {n}"}, "headers": headers}) for n in range(start, min(start + 34, 101))]
        assert all(response.status_code == 201 for response in send_together(service, creates))
    first = list_tasks(client, alice)
    assert len(first.json()) == 100
    assert first.headers["x-total-count"] == "101"
    query = dict(next_query(first, alice))
    assert query["offset"] == "100" and query.get("limit", "100") == "100"
    rest = client.get(NEXT_LINK.fullmatch(first.headers["link"])[1], headers=headers)
    assert len(rest.json()) == 1
    assert rest.json()[0]["id"] not in {task["id"] for task in first.json()}
    assert "link" not in rest.headers


# ---------------------------------------------------------------------------------------
# GET /api/{user_id}/tags
# ---------------------------------------------------------------------------------------


def tags_of(client, user, path_user=None):
    return client.get(f"/api/{(path_user or user).id}/tags", headers=user.headers)


def test_a_user_without_tasks_has_no_tags(client, alice):
    response = tags_of(client, alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == []


def test_tags_are_counted_over_the_callers_tasks_by_name(client, alice, bob, create_task):
    create_task(tags=["work", "Home"])
    create_task(tags=["work"], completed=True)
    create_task(tags=["errand", "work"])
    create_task()
    create_task(user=bob, tags=["work", "bobs-own"])
    response = tags_of(client, alice)
    assert response.status_code == 200
    assert response.json() == [{"tag": "errand", "count": 1}, {"tag": "home", "count": 1}, {"tag": "work", "count": 3}]


def test_tags_follow_the_tasks_as_they_change(client, alice, create_task):
    first = create_task(tags=["work", "home"])
    second = create_task(tags=["work"])
    client.patch(alice.tasks_url(first["id"]), json={"tags": ["home", "garden"]}, headers=alice.headers)
    client.delete(alice.tasks_url(second["id"]), headers=alice.headers)
    assert tags_of(client, alice).json() == [{"tag": "garden", "count": 1}, {"tag": "home", "count": 1}]


def test_tags_of_another_user_are_403(client, alice, bob, create_task):
    create_task(tags=["secret"])
    problem(tags_of(client, bob, path_user=alice), 403)


@pytest.mark.parametrize("authorization", [None, "Bearer not.a.token"], ids=["no-token", "bad-token"])
def test_tags_without_a_valid_token_are_401(client, alice, authorization):
    response = client.get(f"/api/{alice.id}/tags", headers={} if authorization is None else {"Authorization": authorization})
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("user_id", ["0", "abc", str(2**63)], ids=["zero", "letters", "2**63"])
def test_tags_at_a_path_id_that_is_not_a_positive_64_bit_integer_are_404(client, alice, user_id):
    problem(client.get(f"/api/{user_id}/tags", headers=alice.headers), 404)


# ---------------------------------------------------------------------------------------
# ETag: strong, on every single-task answer, changed by every write and only then
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["create", "get", "replace", "update", "complete"])
def test_every_single_task_answer_has_a_strong_etag_that_a_get_then_repeats(client, alice, task, route):
    if route == "create":
        response = client.post(alice.tasks_url(), json={"title": "t"}, headers=alice.headers)
    elif route == "get":
        response = get(client, alice, task["id"])
    else:
        response = write(client, alice, task["id"], route)
    assert response.status_code in (200, 201), response.text
    assert not response.headers["etag"].startswith("W/")
    assert etag(get(client, alice, response.json()["id"])) == etag(response)


def test_an_etag_stays_the_same_while_the_task_does(client, alice, task, create_task):
    before = etag(get(client, alice, task["id"]))
    other = create_task(title="another")
    client.patch(alice.tasks_url(other["id"]), json={"title": "another, renamed"}, headers=alice.headers)
    list_tasks(client, alice)
    client.patch(alice.tasks_url(task["id"]), json={"priority": "urgent"}, headers=alice.headers)
    assert etag(get(client, alice, task["id"])) == before


def test_two_tasks_have_different_etags(client, alice, task, create_task):
    other = create_task(title="another")
    assert etag(get(client, alice, task["id"])) != etag(get(client, alice, other["id"]))


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("replace", {"title": "original title", "description": "original notes", "priority": "high", "due_at": "2026-12-24T17:00:00Z", "tags": ["home", "work"]}),
        ("update", {"title": "original title"}),
        ("update", {"priority": "low"}),
        ("update", {"due_at": "2026-12-24T17:00:00.000001Z"}),
        ("update", {"tags": ["home"]}),
        ("complete", {"completed": False}),
        ("complete", {"completed": True}),
    ],
    ids=["put-the-same-values", "patch-the-same-title", "priority", "due_at-by-a-microsecond", "tags", "complete-unchanged", "complete"],
)
def test_every_write_changes_the_etag(client, alice, task, route, body):
    before = etag(get(client, alice, task["id"]))
    response = write(client, alice, task["id"], route, json=body)
    assert response.status_code == 200, response.text
    assert etag(response) != before
    assert etag(get(client, alice, task["id"])) == etag(response)


# ---------------------------------------------------------------------------------------
# If-None-Match on GET: 304 while the client's copy is current
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda current: current, id="the-current-etag"),
        pytest.param(lambda current: f'"stale", {current}', id="a-list-holding-it"),
        pytest.param(lambda current: f"{current},\"other\"", id="a-list-without-spaces"),
        pytest.param(lambda current: f"W/{current}", id="its-weak-form"),
        pytest.param(lambda current: "*", id="star"),
    ],
)
def test_if_none_match_holding_the_current_etag_is_304_without_a_body(client, alice, task, header):
    current = etag(get(client, alice, task["id"]))
    response = get(client, alice, task["id"], **{"If-None-Match": header(current)})
    assert response.status_code == 304
    assert response.content == b""


def test_a_304_carries_the_current_etag(client, alice, task):
    current = etag(get(client, alice, task["id"]))
    response = get(client, alice, task["id"], **{"If-None-Match": current})
    assert response.status_code == 304
    assert response.headers["etag"] == current


@pytest.mark.parametrize("header", ['"stale"', 'W/"stale"', '"a", "b"', "garbage"], ids=["another-etag", "another-weak-etag", "a-list-of-others", "unquoted"])
def test_if_none_match_without_the_current_etag_is_200_with_the_task(client, alice, task, header):
    response = get(client, alice, task["id"], **{"If-None-Match": header})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == task


def test_if_none_match_with_the_etag_from_before_a_write_is_200_with_the_new_task(client, alice, task):
    old = etag(get(client, alice, task["id"]))
    written = client.patch(alice.tasks_url(task["id"]), json={"title": "changed"}, headers=alice.headers)
    response = get(client, alice, task["id"], **{"If-None-Match": old})
    assert response.status_code == 200
    assert response.json() == written.json()
    assert etag(response) == etag(written)


def test_if_none_match_on_a_missing_task_is_404(client, alice, missing_task_id):
    problem(get(client, alice, missing_task_id, **{"If-None-Match": "*"}), 404)


def test_if_none_match_on_another_users_task_is_404(client, alice, bob, task):
    current = etag(get(client, alice, task["id"]))
    response = client.get(bob.tasks_url(task["id"]), headers={**bob.headers, "If-None-Match": current})
    problem(response, 404)


# ---------------------------------------------------------------------------------------
# If-Match on PUT, PATCH, complete and DELETE: 412 unless it names the current ETag or *
# ---------------------------------------------------------------------------------------

MATCHING = [
    pytest.param(lambda current: current, id="the-current-etag"),
    pytest.param(lambda current: f'"stale", {current}', id="a-list-holding-it"),
    pytest.param(lambda current: f"{current},\"other\"", id="a-list-without-spaces"),
    pytest.param(lambda current: "*", id="star"),
]
NOT_MATCHING = [
    pytest.param(lambda current: '"stale"', id="another-etag"),
    pytest.param(lambda current: f"W/{current}", id="the-weak-form-of-the-current-etag"),
    pytest.param(lambda current: '"a", "b"', id="a-list-of-others"),
    pytest.param(lambda current: current.strip('"'), id="the-current-etag-unquoted"),
    pytest.param(lambda current: current[:-1] + 'x"', id="almost-the-current-etag"),
]


@pytest.mark.parametrize("route", list(WRITES))
@pytest.mark.parametrize("header", MATCHING)
def test_a_write_with_a_matching_if_match_succeeds(client, alice, task, route, header):
    current = etag(get(client, alice, task["id"]))
    response = write(client, alice, task["id"], route, {"If-Match": header(current)})
    if route == "delete":
        assert response.status_code == 204, response.text
        problem(get(client, alice, task["id"]), 404)
    else:
        assert response.status_code == 200, response.text
        assert response.json() == alice_sees(client, alice, task["id"])
        assert etag(response) != current


@pytest.mark.parametrize("route", list(WRITES))
@pytest.mark.parametrize("header", NOT_MATCHING)
def test_a_write_with_an_if_match_that_does_not_match_is_412_and_changes_nothing(client, alice, task, route, header):
    current = etag(get(client, alice, task["id"]))
    response = write(client, alice, task["id"], route, {"If-Match": header(current)})
    problem(response, 412)
    unchanged = get(client, alice, task["id"])
    assert unchanged.json() == task
    assert etag(unchanged) == current


@pytest.mark.parametrize("route", list(WRITES))
def test_a_write_with_the_etag_from_before_another_write_is_412_and_keeps_the_other_write(client, alice, task, route):
    """Two tabs: both read the task, the first saves, the second's save is refused."""
    seen_by_both = etag(get(client, alice, task["id"]))
    first = client.patch(alice.tasks_url(task["id"]), json={"title": "saved by the first tab"}, headers={**alice.headers, "If-Match": seen_by_both})
    assert first.status_code == 200, first.text
    problem(write(client, alice, task["id"], route, {"If-Match": seen_by_both}), 412)
    assert alice_sees(client, alice, task["id"]) == first.json()


@pytest.mark.parametrize("route", list(WRITES))
@pytest.mark.parametrize("header", ['"stale"', "*"], ids=["wrong-etag", "star"])
def test_a_write_with_if_match_on_a_missing_task_is_404(client, alice, missing_task_id, route, header):
    problem(write(client, alice, missing_task_id, route, {"If-Match": header}), 404)


@pytest.mark.parametrize("route", list(WRITES))
@pytest.mark.parametrize("which", ["current", "wrong"])
def test_bob_with_if_match_on_alices_task_id_is_404_and_it_is_unchanged(client, alice, bob, task, route, which):
    current = etag(get(client, alice, task["id"]))
    response = write(client, bob, task["id"], route, {"If-Match": current if which == "current" else '"stale"'})
    problem(response, 404)
    assert alice_sees(client, alice, task["id"]) == task


@pytest.mark.parametrize("route", list(WRITES))
def test_bob_with_if_match_on_alices_path_is_403(client, alice, bob, task, route):
    problem(write(client, bob, task["id"], route, {"If-Match": '"stale"'}, path_user=alice), 403)
    assert alice_sees(client, alice, task["id"]) == task


@pytest.mark.parametrize("route", BODY_WRITES)
@pytest.mark.parametrize("target", ["existing", "missing"])
def test_a_bad_body_beats_a_wrong_if_match(client, alice, task, missing_task_id, route, target):
    task_id = task["id"] if target == "existing" else missing_task_id
    response = write(client, alice, task_id, route, {"If-Match": '"stale"', **JSON}, content=b"{")
    assert error_fields(response) == ["body"]
    assert alice_sees(client, alice, task["id"]) == task


@pytest.mark.parametrize("route", ["replace", "update", "complete"])
def test_twenty_racing_writes_with_one_etag_give_one_200_and_nineteen_412(client, service, alice, task, route):
    current = etag(get(client, alice, task["id"]))
    method, suffix, _ = WRITES[route]
    headers = {**alice.headers, "If-Match": current}
    bodies = [{"completed": n % 2 == 0} if route == "complete" else {"title": f"writer {n}"} for n in range(20)]
    responses = send_together(service, [(method, alice.tasks_url(task["id"]) + suffix, {"json": body, "headers": headers}) for body in bodies])
    assert Counter(response.status_code for response in responses) == {200: 1, 412: 19}
    [winner] = [response for response in responses if response.status_code == 200]
    for response in responses:
        if response.status_code == 412:
            problem(response, 412)
    final = get(client, alice, task["id"])
    assert final.json() == winner.json()
    assert etag(final) == etag(winner)


def test_racing_deletes_with_one_etag_give_one_204_and_the_rest_412_or_404(client, service, alice, task):
    headers = {**alice.headers, "If-Match": etag(get(client, alice, task["id"]))}
    responses = send_together(service, [("DELETE", alice.tasks_url(task["id"]), {"headers": headers}) for _ in range(20)])
    counts = Counter(response.status_code for response in responses)
    assert counts[204] == 1 and counts[412] + counts[404] == 19, counts
    for response in responses:
        if response.status_code != 204:
            problem(response, response.status_code)
    problem(get(client, alice, task["id"]), 404)


def test_a_write_without_if_match_still_happens(client, alice, task):
    response = client.patch(alice.tasks_url(task["id"]), json={"title": "no precondition"}, headers=alice.headers)
    assert response.status_code == 200
    assert alice_sees(client, alice, task["id"])["title"] == "no precondition"


# ---------------------------------------------------------------------------------------
# CORS for the new headers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "header"),
    [("GET", "if-none-match"), ("PUT", "if-match"), ("PATCH", "if-match"), ("DELETE", "if-match")],
    ids=["get-if-none-match", "put-if-match", "patch-if-match", "delete-if-match"],
)
def test_a_preflight_from_the_frontend_may_send_the_conditional_headers(client, alice, method, header):
    response = client.options(
        alice.tasks_url(1),
        headers={"Origin": FRONTEND, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": f"authorization, content-type, {header}"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == FRONTEND
    allowed = {name.strip().lower() for name in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", header} <= allowed
    assert method in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize("path", ["list", "task"])
def test_the_frontend_can_read_etag_x_total_count_and_link(client, alice, task, path):
    url = alice.tasks_url() if path == "list" else alice.tasks_url(task["id"])
    response = client.get(url, headers={**alice.headers, "Origin": FRONTEND})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "x-total-count", "link"} <= exposed


# ---------------------------------------------------------------------------------------
# The OpenAPI document names all of it
# ---------------------------------------------------------------------------------------


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operation(document, method, path) -> dict:
    return document["paths"][path][method.lower()]


def validator(document, schema) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": document["components"]}, format_checker=Draft202012Validator.FORMAT_CHECKER)


def request_schema(document, method, path) -> dict:
    return operation(document, method, path)["requestBody"]["content"]["application/json"]["schema"]


def response_schema(document, method, path, status) -> dict:
    return operation(document, method, path)["responses"][str(status)]["content"]["application/json"]["schema"]


def header_names(response: dict) -> set[str]:
    return {name.lower() for name in response.get("headers", {})}


def parameter_names(document, operation_: dict, where: str) -> set[str]:
    found = set()
    for parameter in operation_.get("parameters", []):
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
        if parameter["in"] == where:
            found.add(parameter["name"].lower() if where == "header" else parameter["name"])
    return found


def walk(document, schema, seen=()):
    """Every schema object reachable from this one, $refs followed once."""
    if isinstance(schema, dict):
        if "$ref" in schema and schema["$ref"] not in seen:
            name = schema["$ref"].rsplit("/", 1)[1]
            yield from walk(document, document["components"]["schemas"][name], (*seen, schema["$ref"]))
        yield schema
        for value in schema.values():
            yield from walk(document, value, seen)
    elif isinstance(schema, list):
        for value in schema:
            yield from walk(document, value, seen)


A_TASK = {"id": 1, "user_id": 1, "title": "t", "description": None, "completed": False, "priority": "high", "due_at": "2026-12-24T17:00:00.000000Z", "tags": ["work"],
          "recurrence": None, "time_zone": "UTC", "reminders": [], "series_id": None, "next_id": None,
          "created_at": "2026-12-01T00:00:00.000000Z", "updated_at": "2026-12-01T00:00:00.000000Z"}


@pytest.mark.parametrize(
    ("task", "valid"),
    [
        pytest.param(A_TASK, True, id="a-task"),
        pytest.param({**A_TASK, "due_at": None}, True, id="no-due-date"),
        pytest.param({**A_TASK, "priority": "urgent"}, False, id="unknown-priority"),
        pytest.param({**A_TASK, "tags": "work"}, False, id="tags-not-a-list"),
        pytest.param({key: value for key, value in A_TASK.items() if key != "tags"}, False, id="no-tags"),
        pytest.param({key: value for key, value in A_TASK.items() if key != "priority"}, False, id="no-priority"),
        pytest.param({key: value for key, value in A_TASK.items() if key != "due_at"}, False, id="no-due_at"),
        pytest.param({**A_TASK, "recurrence": {"rule": "FREQ=DAILY", "from": "due"}, "reminders": [{"minutes_before": 5}, {"at": "2026-12-24T16:00:00.000000Z"}],
                      "series_id": 1, "next_id": 2}, True, id="recurring-with-reminders"),
        pytest.param({**A_TASK, "reminders": [{"soon": True}]}, False, id="unknown-reminder"),
        pytest.param({key: value for key, value in A_TASK.items() if key != "next_id"}, False, id="no-next_id"),
    ],
)
def test_the_documented_task_has_the_v2_and_v3_fields(document, task, valid):
    assert validator(document, response_schema(document, "GET", "/api/{user_id}/tasks/{task_id}", 200)).is_valid(task) == valid


@pytest.mark.parametrize(
    ("method", "path", "body", "valid"),
    [
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t"}, True, id="create-with-a-title-alone"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "priority": "low", "due_at": "2026-12-24T18:00:00+01:00", "tags": ["a"]}, True, id="create-with-every-v2-field"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "due_at": None}, True, id="create-with-due_at-null"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "priority": "High"}, False, id="create-capitalised-priority"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "priority": None}, False, id="create-priority-null"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "tags": None}, False, id="create-tags-null"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "tags": [f"t{n}" for n in range(21)]}, False, id="create-21-tags"),
        pytest.param("POST", "/api/{user_id}/tasks", {"title": "t", "tags": ["x" * 40]}, False, id="create-a-40-character-tag"),
        pytest.param("PUT", "/api/{user_id}/tasks/{task_id}", {"title": "t"}, True, id="put-with-a-title-alone"),
        pytest.param("PUT", "/api/{user_id}/tasks/{task_id}", {"title": "t", "priority": "urgent"}, False, id="put-unknown-priority"),
        pytest.param("PATCH", "/api/{user_id}/tasks/{task_id}", {"due_at": None}, True, id="patch-due_at-null"),
        pytest.param("PATCH", "/api/{user_id}/tasks/{task_id}", {"tags": []}, True, id="patch-no-tags"),
        pytest.param("PATCH", "/api/{user_id}/tasks/{task_id}", {"priority": None}, False, id="patch-priority-null"),
        pytest.param("PATCH", "/api/{user_id}/tasks/{task_id}", {"tags": None}, False, id="patch-tags-null"),
    ],
)
def test_the_documented_request_bodies_take_the_v2_fields(document, method, path, body, valid):
    assert validator(document, request_schema(document, method, path)).is_valid(body) == valid


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_no_request_schema_has_a_default_that_a_client_generator_reads_as_required(document, method):
    path = "/api/{user_id}/tasks" if method == "POST" else "/api/{user_id}/tasks/{task_id}"
    schema = request_schema(document, method, path)
    with_defaults = [sorted(node["properties"]) for node in walk(document, schema) if isinstance(node.get("properties"), dict) and any("default" in field for field in node["properties"].values())]
    assert with_defaults == []
    # Required: a task's title, a recurrence's rule, and the one field of each kind of reminder.
    assert all(set(node.get("required", [])) <= {"title", "rule", "minutes_before", "at"} for node in walk(document, schema) if "properties" in node)


def test_the_list_documents_every_query_parameter_and_its_headers(document):
    listing = operation(document, "GET", "/api/{user_id}/tasks")
    assert {"completed", "priority", "tag", "q", "due_after", "due_before", "overdue", "sort", "limit", "offset"} <= parameter_names(document, listing, "query")
    assert {"x-total-count", "link"} <= header_names(listing["responses"]["200"])


def test_the_tags_route_is_documented(document):
    tags = operation(document, "GET", "/api/{user_id}/tags")
    assert {"200", "401", "403"} <= set(tags["responses"])
    assert tags.get("security") == [{"bearer": []}]
    schema = validator(document, tags["responses"]["200"]["content"]["application/json"]["schema"])
    assert schema.is_valid([{"tag": "work", "count": 3}])
    assert not schema.is_valid([{"tag": "work"}])


@pytest.mark.parametrize(
    ("method", "path", "success", "condition", "status"),
    [
        ("GET", "/api/{user_id}/tasks/{task_id}", "200", "if-none-match", "304"),
        ("PUT", "/api/{user_id}/tasks/{task_id}", "200", "if-match", "412"),
        ("PATCH", "/api/{user_id}/tasks/{task_id}", "200", "if-match", "412"),
        ("PATCH", "/api/{user_id}/tasks/{task_id}/complete", "200", "if-match", "412"),
        ("DELETE", "/api/{user_id}/tasks/{task_id}", "204", "if-match", "412"),
        ("POST", "/api/{user_id}/tasks", "201", None, None),
    ],
    ids=["get", "put", "patch", "complete", "delete", "create"],
)
def test_each_task_operation_documents_its_etag_and_its_conditional_header(document, method, path, success, condition, status):
    documented = operation(document, method, path)
    if method != "DELETE":
        assert "etag" in header_names(documented["responses"][success])
    if condition:
        assert condition in parameter_names(document, documented, "header")
        assert status in documented["responses"]
    if status == "412":
        assert documented["responses"]["412"]["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    if status == "304":
        assert "content" not in documented["responses"]["304"]


def test_answers_with_the_v2_fields_match_their_documented_schemas(document, client, alice, task):
    responses = [
        ("GET", "/api/{user_id}/tasks", list_tasks(client, alice, [("priority", "high"), ("tag", "work"), ("sort", "-due_at")])),
        ("GET", "/api/{user_id}/tasks/{task_id}", get(client, alice, task["id"])),
        ("GET", "/api/{user_id}/tags", tags_of(client, alice)),
        ("PATCH", "/api/{user_id}/tasks/{task_id}", client.patch(alice.tasks_url(task["id"]), json={"due_at": None}, headers=alice.headers)),
    ]
    for method, path, response in responses:
        assert response.status_code == 200, response.text
        errors = [error.message for error in validator(document, response_schema(document, method, path, 200)).iter_errors(response.json())]
        assert errors == [], f"{method} {path}"
