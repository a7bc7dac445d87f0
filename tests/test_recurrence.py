"""Recurring tasks (v3): the fields, their validation, and the next occurrence a completion makes.

Real service processes on SQLite and PostgreSQL, over real HTTP. Due dates are in 2027 and
later unless a case is about missed dates, so "later than now" never decides an expected date.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest

FAR_DUE = "2027-06-01T09:00:00Z"


def error_fields(response) -> list[str]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [error["field"] for error in response.json()["errors"]]


def write(client, user, task_id, route, body):
    if route == "replace":
        return client.put(user.tasks_url(task_id), json={"title": "a task", **body}, headers=user.headers)
    return client.patch(user.tasks_url(task_id), json=body, headers=user.headers)


def get(client, user, task_id) -> dict:
    response = client.get(user.tasks_url(task_id), headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def all_tasks(client, user) -> list[dict]:
    response = client.get(user.tasks_url(), headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def complete(client, user, task_id) -> dict:
    response = client.patch(user.tasks_url(task_id) + "/complete", json={"completed": True}, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def series(client, user, series_id) -> list[dict]:
    return [task for task in all_tasks(client, user) if task["series_id"] == series_id]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ---------------------------------------------------------------------------------------
# Validation: every bad field is a 400 naming it, and nothing changes.
# ---------------------------------------------------------------------------------------


def rule(text, due_at=FAR_DUE):
    return {"recurrence": {"rule": text}, "due_at": due_at}


BAD_RECURRENCES = [
    pytest.param({"recurrence": "FREQ=DAILY", "due_at": FAR_DUE}, "recurrence", id="recurrence-a-string"),
    pytest.param({"recurrence": ["FREQ=DAILY"], "due_at": FAR_DUE}, "recurrence", id="recurrence-an-array"),
    pytest.param({"recurrence": 1, "due_at": FAR_DUE}, "recurrence", id="recurrence-a-number"),
    pytest.param({"recurrence": {"rule": "FREQ=DAILY", "every": 2}, "due_at": FAR_DUE}, "recurrence", id="unknown-key"),
    pytest.param({"recurrence": {"from": "due"}, "due_at": FAR_DUE}, "recurrence.rule", id="no-rule"),
    pytest.param(rule("FREQ=DAILY;BYHOUR=9"), "recurrence.rule", id="part-BYHOUR"),
    pytest.param(rule("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1"), "recurrence.rule", id="part-BYSETPOS"),
    pytest.param(rule("FREQ=HOURLY"), "recurrence.rule", id="FREQ-HOURLY"),
    pytest.param(rule("FREQ=MINUTELY"), "recurrence.rule", id="FREQ-MINUTELY"),
    pytest.param(rule("RRULE:FREQ=DAILY"), "recurrence.rule", id="RRULE-prefix"),
    pytest.param(rule("FREQ=WEEKLY;WKST=MO"), "recurrence.rule", id="part-WKST"),
    pytest.param(rule("FREQ=YEARLY;BYWEEKNO=1"), "recurrence.rule", id="part-BYWEEKNO"),
    pytest.param(rule("FREQ=DAILY;DTSTART=20270101T000000Z"), "recurrence.rule", id="part-DTSTART"),
    pytest.param(rule(""), "recurrence.rule", id="empty-rule"),
    pytest.param(rule("INTERVAL=2"), "recurrence.rule", id="no-FREQ"),
    pytest.param(rule("FREQ=daily"), "recurrence.rule", id="FREQ-lower-case"),
    pytest.param(rule("freq=DAILY"), "recurrence.rule", id="part-name-lower-case"),
    pytest.param(rule("FREQ=DAILY;"), "recurrence.rule", id="trailing-semicolon"),
    pytest.param(rule("FREQ=DAILY;FREQ=WEEKLY"), "recurrence.rule", id="FREQ-twice"),
    pytest.param(rule("FREQ=DAILY;INTERVAL=0"), "recurrence.rule", id="INTERVAL-0"),
    pytest.param(rule("FREQ=DAILY;INTERVAL=-1"), "recurrence.rule", id="INTERVAL-negative"),
    pytest.param(rule("FREQ=DAILY;INTERVAL=two"), "recurrence.rule", id="INTERVAL-a-word"),
    pytest.param(rule("FREQ=DAILY;COUNT=0"), "recurrence.rule", id="COUNT-0"),
    pytest.param(rule("FREQ=DAILY;UNTIL=2027-12-31"), "recurrence.rule", id="UNTIL-with-dashes"),
    pytest.param(rule("FREQ=DAILY;UNTIL=20271231T000000"), "recurrence.rule", id="UNTIL-without-Z"),
    pytest.param(rule("FREQ=WEEKLY;BYDAY=XX"), "recurrence.rule", id="BYDAY-unknown-day"),
    pytest.param(rule("FREQ=MONTHLY;BYDAY=6MO"), "recurrence.rule", id="BYDAY-sixth-week"),
    pytest.param(rule("FREQ=MONTHLY;BYMONTHDAY=32"), "recurrence.rule", id="BYMONTHDAY-32"),
    pytest.param(rule("FREQ=MONTHLY;BYMONTHDAY=0"), "recurrence.rule", id="BYMONTHDAY-0"),
    pytest.param(rule("FREQ=YEARLY;BYMONTH=13"), "recurrence.rule", id="BYMONTH-13"),
    pytest.param(rule("FREQ=DAILY;COUNT=3;UNTIL=20271231"), "recurrence.rule", id="COUNT-and-UNTIL"),
    pytest.param(rule("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"), "recurrence.rule", id="no-date-february-30"),
    pytest.param(rule("FREQ=DAILY;" + "INTERVAL=2;" * 30 + "COUNT=2"), "recurrence.rule", id="over-200-characters"),
    pytest.param({"recurrence": {"rule": 42}, "due_at": FAR_DUE}, "recurrence.rule", id="rule-a-number"),
    pytest.param({"recurrence": {"rule": None}, "due_at": FAR_DUE}, "recurrence.rule", id="rule-null"),
    pytest.param({"recurrence": {"rule": "FREQ=DAILY"}}, "due_at", id="without-due_at"),
    pytest.param({"recurrence": {"rule": "FREQ=DAILY"}, "due_at": None}, "due_at", id="with-due_at-null"),
    pytest.param({"recurrence": {"rule": "FREQ=DAILY", "from": "done"}, "due_at": FAR_DUE}, "recurrence.from", id="from-other-word"),
    pytest.param({"recurrence": {"rule": "FREQ=DAILY", "from": "Due"}, "due_at": FAR_DUE}, "recurrence.from", id="from-capitalised"),
    pytest.param({"recurrence": {"rule": "FREQ=DAILY", "from": None}, "due_at": FAR_DUE}, "recurrence.from", id="from-null"),
]

BAD_TIME_ZONES = [
    pytest.param({"time_zone": "Mars/Base"}, "time_zone", id="time_zone-not-iana"),
    pytest.param({"time_zone": ""}, "time_zone", id="time_zone-empty"),
    pytest.param({"time_zone": 42}, "time_zone", id="time_zone-a-number"),
    pytest.param({"time_zone": "europe/berlin"}, "time_zone", id="time_zone-lower-case"),
    pytest.param({"time_zone": "+01:00"}, "time_zone", id="time_zone-an-offset"),
    pytest.param({"time_zone": "Europe/Berlin\u0000"}, "time_zone", id="time_zone-nul"),
]

AT = "2027-05-31T09:00:00Z"
BAD_REMINDERS = [
    pytest.param({"reminders": [{"minutes_before": n} for n in range(6)], "due_at": FAR_DUE}, "reminders", id="six"),
    pytest.param({"reminders": [{"minutes_before": 10}, {"minutes_before": 10}], "due_at": FAR_DUE}, "reminders", id="duplicate-minutes"),
    pytest.param({"reminders": [{"at": AT}, {"at": "2027-05-31T11:00:00+02:00"}], "due_at": FAR_DUE}, "reminders", id="duplicate-instant"),
    pytest.param({"reminders": [{"minutes_before": -1}], "due_at": FAR_DUE}, "reminders", id="minutes_before-negative"),
    pytest.param({"reminders": [{"minutes_before": 40321}], "due_at": FAR_DUE}, "reminders", id="minutes_before-past-four-weeks"),
    pytest.param({"reminders": [{"minutes_before": "10"}], "due_at": FAR_DUE}, "reminders", id="minutes_before-a-string"),
    pytest.param({"reminders": [{"minutes_before": 1.5}], "due_at": FAR_DUE}, "reminders", id="minutes_before-a-fraction"),
    pytest.param({"reminders": [{"minutes_before": True}], "due_at": FAR_DUE}, "reminders", id="minutes_before-a-boolean"),
    pytest.param({"reminders": [{"minutes_before": 10, "at": AT}], "due_at": FAR_DUE}, "reminders", id="both-keys"),
    pytest.param({"reminders": [{"minutes": 10}], "due_at": FAR_DUE}, "reminders", id="reminder-unknown-key"),
    pytest.param({"reminders": [{}], "due_at": FAR_DUE}, "reminders", id="empty-object"),
    pytest.param({"reminders": [None], "due_at": FAR_DUE}, "reminders", id="null-item"),
    pytest.param({"reminders": {"minutes_before": 10}, "due_at": FAR_DUE}, "reminders", id="not-an-array"),
    pytest.param({"reminders": [{"at": "2027-05-31T09:00:00"}]}, "reminders", id="at-without-offset"),
    pytest.param({"reminders": [{"at": "2027-05-31"}]}, "reminders", id="at-a-date"),
    pytest.param({"reminders": [{"at": 1811754000}]}, "reminders", id="at-a-number"),
    pytest.param({"reminders": [{"minutes_before": 10}]}, "reminders", id="minutes_before-without-due_at"),
    pytest.param({"reminders": [{"minutes_before": 10}], "due_at": None}, "reminders", id="minutes_before-with-due_at-null"),
]


@pytest.fixture
def plain(create_task):
    """Alice's task with no due date, no rule, no reminders."""
    return create_task(title="plain")


# POST and PUT read one body schema (TaskFields), PATCH another (TaskChanges): every case
# goes through POST and PATCH, and a few of each kind through PUT, to keep the run short.
BAD_FIELDS = BAD_RECURRENCES + BAD_TIME_ZONES + BAD_REMINDERS
ON_PUT_TOO = {"unknown-key", "part-BYHOUR", "COUNT-and-UNTIL", "no-date-february-30", "without-due_at", "from-other-word",
              "time_zone-not-iana", "time_zone-a-number", "six", "duplicate-instant", "minutes_before-a-string",
              "both-keys", "at-without-offset", "minutes_before-without-due_at"}


def bad_field_cases():
    for route in ("create", "update", "replace"):
        for case in BAD_FIELDS:
            if route != "replace" or case.id in ON_PUT_TOO:
                yield pytest.param(route, *case.values, id=f"{case.id}-{route}")


@pytest.mark.parametrize(("route", "body", "field"), list(bad_field_cases()))
def test_a_bad_recurrence_time_zone_or_reminder_is_400_naming_it_and_changes_nothing(client, alice, plain, route, body, field):
    if route == "create":
        response = client.post(alice.tasks_url(), json={"title": "t", **body}, headers=alice.headers)
    else:
        response = write(client, alice, plain["id"], route, body)
    fields = error_fields(response)
    assert fields and all(name == field or name.startswith(field + ".") for name in fields), fields
    assert all_tasks(client, alice) == [plain]


def test_a_patch_that_clears_due_at_under_minutes_before_reminders_is_400_and_changes_nothing(client, alice, create_task):
    task = create_task(due_at=FAR_DUE, reminders=[{"minutes_before": 10}])
    assert error_fields(write(client, alice, task["id"], "update", {"due_at": None})) == ["reminders"]
    assert get(client, alice, task["id"]) == task


def test_a_patch_that_clears_due_at_of_a_recurring_task_is_400_and_changes_nothing(client, alice, create_task):
    task = create_task(due_at=FAR_DUE, recurrence={"rule": "FREQ=DAILY"})
    assert error_fields(write(client, alice, task["id"], "update", {"due_at": None})) == ["due_at"]
    assert get(client, alice, task["id"]) == task


def test_a_patch_of_a_rule_with_no_date_from_the_tasks_own_due_at_is_400(client, alice, create_task):
    task = create_task(due_at=FAR_DUE)
    response = write(client, alice, task["id"], "update", {"recurrence": {"rule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}})
    assert error_fields(response) == ["recurrence.rule"]
    assert get(client, alice, task["id"]) == task


# ---------------------------------------------------------------------------------------
# Defaults, PUT and PATCH
# ---------------------------------------------------------------------------------------

DEFAULTS = {"recurrence": None, "time_zone": "UTC", "reminders": [], "series_id": None, "next_id": None}


def test_a_new_task_answers_the_v3_defaults(client, alice, create_task):
    task = create_task()
    assert {name: task[name] for name in DEFAULTS} == DEFAULTS
    assert get(client, alice, task["id"]) == task
    assert all_tasks(client, alice) == [task]


def test_put_resets_omitted_v3_fields_to_their_defaults(client, alice, create_task):
    task = create_task(
        due_at=FAR_DUE, recurrence={"rule": "FREQ=DAILY"}, time_zone="Europe/Berlin", reminders=[{"minutes_before": 5}, {"at": AT}]
    )
    response = client.put(alice.tasks_url(task["id"]), json={"title": "again"}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert {name: response.json()[name] for name in DEFAULTS} == DEFAULTS
    assert get(client, alice, task["id"]) == response.json()


@pytest.mark.parametrize(
    ("changes", "answered"),
    [
        pytest.param({"recurrence": {"rule": "FREQ=DAILY"}}, {"recurrence": {"rule": "FREQ=DAILY", "from": "due"}}, id="recurrence-from-omitted"),
        pytest.param(
            {"recurrence": {"rule": "FREQ=WEEKLY;BYDAY=MO,TH", "from": "completion"}},
            {"recurrence": {"rule": "FREQ=WEEKLY;BYDAY=MO,TH", "from": "completion"}},
            id="recurrence-from-completion",
        ),
        pytest.param({"time_zone": "Europe/Berlin"}, {"time_zone": "Europe/Berlin"}, id="time_zone"),
        pytest.param({"reminders": [{"minutes_before": 0}, {"minutes_before": 40320}]}, {"reminders": [{"minutes_before": 0}, {"minutes_before": 40320}]}, id="minutes_before-bounds"),
        pytest.param({"reminders": [{"at": "2027-05-31T11:00:00+02:00"}]}, {"reminders": [{"at": "2027-05-31T09:00:00.000000Z"}]}, id="at-in-utc"),
    ],
)
def test_patch_sets_each_v3_field(client, alice, create_task, changes, answered):
    task = create_task(due_at=FAR_DUE)
    response = write(client, alice, task["id"], "update", changes)
    assert response.status_code == 200, response.text
    # A task that now recurs is the first of its series.
    series = {"series_id": task["id"]} if answered.get("recurrence") else {}
    assert response.json() == {**task, **answered, **series, "updated_at": response.json()["updated_at"]}
    assert get(client, alice, task["id"]) == response.json()


def test_patch_with_recurrence_null_stops_the_task_recurring(client, alice, create_task):
    task = create_task(due_at=FAR_DUE, recurrence={"rule": "FREQ=DAILY"})
    response = write(client, alice, task["id"], "update", {"recurrence": None})
    assert response.status_code == 200, response.text
    assert response.json()["recurrence"] is None
    assert complete(client, alice, task["id"])["next_id"] is None
    assert len(all_tasks(client, alice)) == 1


# ---------------------------------------------------------------------------------------
# The next occurrence
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recurrence_rule", "time_zone", "due_at", "next_due_at"),
    [
        pytest.param("FREQ=DAILY", "UTC", "2027-01-01T09:00:00Z", "2027-01-02T09:00:00.000000Z", id="daily"),
        pytest.param("FREQ=DAILY;INTERVAL=2", "UTC", "2027-01-01T09:00:00Z", "2027-01-03T09:00:00.000000Z", id="every-second-day"),
        # 2027-01-04 is a Monday: the next date is Thursday, at 18:30 in Berlin still.
        pytest.param("FREQ=WEEKLY;BYDAY=MO,TH", "Europe/Berlin", "2027-01-04T18:30:00+01:00", "2027-01-07T17:30:00.000000Z", id="weekly-monday-to-thursday"),
        pytest.param("FREQ=WEEKLY;BYDAY=MO,TH", "Europe/Berlin", "2027-01-07T18:30:00+01:00", "2027-01-11T17:30:00.000000Z", id="weekly-thursday-to-monday"),
        pytest.param("FREQ=MONTHLY;BYMONTHDAY=1", "UTC", "2027-01-01T08:00:00Z", "2027-02-01T08:00:00.000000Z", id="monthly-on-the-first"),
        pytest.param("FREQ=MONTHLY;BYMONTHDAY=-1", "UTC", "2027-01-31T08:00:00Z", "2027-02-28T08:00:00.000000Z", id="monthly-on-the-last-day"),
        pytest.param("FREQ=MONTHLY;BYDAY=-1FR", "UTC", "2027-01-29T16:00:00Z", "2027-02-26T16:00:00.000000Z", id="monthly-last-friday"),
        pytest.param("FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=24", "Europe/Berlin", "2027-12-24T18:00:00+01:00", "2028-12-24T17:00:00.000000Z", id="yearly-christmas-eve"),
        pytest.param("FREQ=YEARLY", "UTC", "2028-02-29T12:00:00Z", "2032-02-29T12:00:00.000000Z", id="yearly-on-february-29"),
        pytest.param("FREQ=DAILY;COUNT=2", "UTC", "2027-01-01T09:00:00Z", "2027-01-02T09:00:00.000000Z", id="count-2-first"),
        pytest.param("FREQ=DAILY;UNTIL=20270102", "UTC", "2027-01-01T09:00:00Z", "2027-01-02T09:00:00.000000Z", id="until-a-date-first"),
    ],
)
def test_completing_a_recurring_task_makes_the_next_occurrence_of_its_rule(client, alice, create_task, recurrence_rule, time_zone, due_at, next_due_at):
    task = create_task(due_at=due_at, time_zone=time_zone, recurrence={"rule": recurrence_rule})
    done = complete(client, alice, task["id"])
    assert done["next_id"] is not None
    assert get(client, alice, done["next_id"])["due_at"] == next_due_at


@pytest.mark.parametrize(
    ("recurrence_rule", "due_at"),
    [
        pytest.param("FREQ=DAILY;COUNT=2", "2027-01-01T09:00:00Z", id="count-2"),
        pytest.param("FREQ=DAILY;UNTIL=20270102", "2027-01-01T09:00:00Z", id="until-a-date"),
        pytest.param("FREQ=DAILY;UNTIL=20270102T090000Z", "2027-01-01T09:00:00Z", id="until-a-moment-included"),
    ],
)
def test_the_second_completion_of_a_two_date_series_makes_none(client, alice, create_task, recurrence_rule, due_at):
    first = create_task(due_at=due_at, recurrence={"rule": recurrence_rule})
    second = complete(client, alice, first["id"])["next_id"]
    done = complete(client, alice, second)
    assert done["completed"] is True
    assert done["next_id"] is None
    assert len(series(client, alice, first["id"])) == 2


def test_until_a_date_means_the_end_of_that_day_in_the_tasks_zone(client, alice, create_task):
    # 23:30 in Tokyo on 2027-01-02 is 14:30Z: still on the UNTIL date there.
    task = create_task(due_at="2027-01-01T23:30:00+09:00", time_zone="Asia/Tokyo", recurrence={"rule": "FREQ=DAILY;UNTIL=20270102"})
    done = complete(client, alice, task["id"])
    assert get(client, alice, done["next_id"])["due_at"] == "2027-01-02T14:30:00.000000Z"


def test_from_completion_counts_from_the_moment_of_completion(client, alice, create_task):
    task = create_task(due_at="2020-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY;INTERVAL=2", "from": "completion"})
    before = datetime.now(UTC)
    done = complete(client, alice, task["id"])
    after = datetime.now(UTC)
    due = utc(get(client, alice, done["next_id"])["due_at"])
    assert before + timedelta(days=2) - timedelta(seconds=1) <= due <= after + timedelta(days=2)


def test_from_completion_with_count_2_makes_none_at_the_second_completion(client, alice, create_task):
    task = create_task(due_at="2020-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY;COUNT=2", "from": "completion"})
    second = complete(client, alice, task["id"])["next_id"]
    assert second is not None
    assert complete(client, alice, second)["next_id"] is None


def test_from_due_skips_the_dates_missed_since_it_was_due(client, alice, create_task):
    task = create_task(due_at="2020-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    now = datetime.now(UTC)
    done = complete(client, alice, task["id"])
    due = utc(get(client, alice, done["next_id"])["due_at"])
    assert now < due <= now + timedelta(days=1)
    assert (due.hour, due.minute, due.second) == (9, 0, 0)


def test_from_due_keeps_to_the_series_rule_after_a_due_date_was_moved(client, alice, create_task):
    # The series starts on the 1st; the second occurrence is moved to the 20th by hand, and
    # the third is the rule's next date after it, counted from the series' start.
    first = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=WEEKLY"})
    second = complete(client, alice, first["id"])["next_id"]
    assert write(client, alice, second, "update", {"due_at": "2027-01-20T09:00:00Z"}).status_code == 200
    third = complete(client, alice, second)["next_id"]
    assert get(client, alice, third)["due_at"] == "2027-01-22T09:00:00.000000Z"


def test_the_next_occurrence_carries_the_tasks_fields_and_only_its_relative_reminders(client, alice, create_task):
    recurrence = {"rule": "FREQ=DAILY", "from": "due"}
    task = create_task(
        title="water the plants",
        description="the ones on the balcony",
        priority="high",
        tags=["home", "garden"],
        due_at="2027-03-01T08:00:00+01:00",
        time_zone="Europe/Berlin",
        recurrence=recurrence,
        reminders=[{"minutes_before": 30}, {"at": "2027-02-28T20:00:00Z"}, {"minutes_before": 0}],
    )
    done = complete(client, alice, task["id"])
    assert done == {
        **task,
        "completed": True,
        "series_id": task["id"],
        "next_id": done["next_id"],
        "updated_at": done["updated_at"],
    }
    made = get(client, alice, done["next_id"])
    assert made == {
        "id": done["next_id"],
        "user_id": alice.id,
        "title": "water the plants",
        "description": "the ones on the balcony",
        "completed": False,
        "priority": "high",
        "due_at": "2027-03-02T07:00:00.000000Z",
        "tags": ["garden", "home"],
        "recurrence": recurrence,
        "time_zone": "Europe/Berlin",
        "reminders": [{"minutes_before": 30}, {"minutes_before": 0}],
        "series_id": task["id"],
        "next_id": None,
        "created_at": made["created_at"],
        "updated_at": made["created_at"],
    }


def test_every_occurrence_of_a_series_names_its_first_task(client, alice, create_task):
    first = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    second = complete(client, alice, first["id"])["next_id"]
    third = complete(client, alice, second)["next_id"]
    assert [task["series_id"] for task in (get(client, alice, first["id"]), get(client, alice, second), get(client, alice, third))] == [first["id"]] * 3
    assert get(client, alice, third)["due_at"] == "2027-01-03T09:00:00.000000Z"


COMPLETIONS = {
    "patch-complete": lambda client, user, task: client.patch(user.tasks_url(task["id"]) + "/complete", json={"completed": True}, headers=user.headers),
    "patch": lambda client, user, task: client.patch(user.tasks_url(task["id"]), json={"completed": True}, headers=user.headers),
    "put": lambda client, user, task: client.put(
        user.tasks_url(task["id"]),
        json={name: task[name] for name in ("title", "due_at", "recurrence", "time_zone")} | {"completed": True},
        headers=user.headers,
    ),
}


@pytest.mark.parametrize("route", list(COMPLETIONS))
def test_completion_by_every_route_makes_the_next_occurrence(client, alice, create_task, route):
    task = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    response = COMPLETIONS[route](client, alice, task)
    assert response.status_code == 200, response.text
    assert response.json()["completed"] is True
    made = get(client, alice, response.json()["next_id"])
    assert (made["completed"], made["due_at"], made["series_id"]) == (False, "2027-01-02T09:00:00.000000Z", task["id"])
    assert len(all_tasks(client, alice)) == 2


@pytest.mark.parametrize("route", list(COMPLETIONS))
def test_completing_again_after_uncompleting_makes_no_second_occurrence(client, alice, create_task, route):
    task = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    next_id = complete(client, alice, task["id"])["next_id"]
    undone = client.patch(alice.tasks_url(task["id"]) + "/complete", json={"completed": False}, headers=alice.headers)
    assert undone.status_code == 200, undone.text
    assert (undone.json()["completed"], undone.json()["next_id"]) == (False, next_id)
    again = COMPLETIONS[route](client, alice, get(client, alice, task["id"]))
    assert again.status_code == 200, again.text
    assert again.json()["next_id"] == next_id
    assert len(all_tasks(client, alice)) == 2


@pytest.mark.parametrize("route", list(COMPLETIONS))
def test_completing_a_task_that_does_not_recur_makes_none(client, alice, create_task, route):
    task = create_task(due_at="2027-01-01T09:00:00Z")
    response = COMPLETIONS[route](client, alice, task)
    assert response.status_code == 200, response.text
    assert (response.json()["completed"], response.json()["series_id"], response.json()["next_id"]) == (True, None, None)
    assert len(all_tasks(client, alice)) == 1


def test_a_recurring_task_created_completed_makes_none(client, alice, create_task):
    task = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"}, completed=True)
    assert task["next_id"] is None
    assert len(all_tasks(client, alice)) == 1


# ---------------------------------------------------------------------------------------
# Daylight saving: the rule steps the wall clock of the task's zone.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due_at", "next_due_at"),
    [
        pytest.param("2027-03-27T09:00:00+01:00", "2027-03-28T07:00:00.000000Z", id="into-summer-time-last-sunday-of-march"),
        pytest.param("2027-10-30T09:00:00+02:00", "2027-10-31T08:00:00.000000Z", id="out-of-summer-time-last-sunday-of-october"),
    ],
)
def test_a_daily_task_at_nine_in_berlin_stays_at_nine_across_daylight_saving(client, alice, create_task, due_at, next_due_at):
    task = create_task(due_at=due_at, time_zone="Europe/Berlin", recurrence={"rule": "FREQ=DAILY"})
    done = complete(client, alice, task["id"])
    assert get(client, alice, done["next_id"])["due_at"] == next_due_at


def test_the_same_rule_in_utc_keeps_the_utc_time_across_berlins_change(client, alice, create_task):
    task = create_task(due_at="2027-03-27T08:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    done = complete(client, alice, task["id"])
    assert get(client, alice, done["next_id"])["due_at"] == "2027-03-28T08:00:00.000000Z"


# ---------------------------------------------------------------------------------------
# Racing completions, and the feed
# ---------------------------------------------------------------------------------------


def test_twelve_racing_completions_of_one_recurring_task_make_exactly_one_next_occurrence(service, alice, create_task):
    import httpx

    task = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    barrier, answers = threading.Barrier(12), []

    def finish():
        with httpx.Client(base_url=service.url, timeout=30) as own:
            headers = alice.headers
            barrier.wait(timeout=10)
            answers.append(own.patch(alice.tasks_url(task["id"]) + "/complete", json={"completed": True}, headers=headers))

    threads = [threading.Thread(target=finish) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answer.status_code for answer in answers) == [200] * 12, [answer.text for answer in answers if answer.status_code != 200]
    next_ids = {answer.json()["next_id"] for answer in answers}
    assert len(next_ids) == 1 and None not in next_ids
    assert service.sql("SELECT count(*) FROM tasks WHERE series_id = $1", task["id"])[0][0] == 2


def test_the_feed_after_a_completion_holds_the_completed_task_and_the_new_one(client, alice, create_task):
    task = create_task(due_at="2027-01-01T09:00:00Z", recurrence={"rule": "FREQ=DAILY"})
    cursor = client.get(f"/api/{alice.id}/changes", headers=alice.headers).json()["cursor"]
    done = complete(client, alice, task["id"])
    response = client.get(f"/api/{alice.id}/changes", params={"since": cursor}, headers=alice.headers)
    assert response.status_code == 200, response.text
    changes = {change["id"]: change for change in response.json()["changes"]}
    assert changes == {task["id"]: done, done["next_id"]: get(client, alice, done["next_id"])}
