"""Before any load: the service and every baseline answer the same page, and the bench's tokens are the service's own.

    python bench/check_pages.py SERVICE_PORT USER_ID TOKEN MODE=PORT...

GET /api/me with the seeded token must answer USER_ID (a token signed with the service's
JWT_PRIVATE_KEY, whose sub is the backend user id, speaks for that user). Then the user's
default list from the service and from each baseline: the same tasks with the same fields
and values, in the same order, and the same X-Total-Count (the ceiling mode, a fixed page,
only the same number of tasks with the same fields). Exits 1 on any difference, since the
rounds would then compare different work.
"""

import json
import sys
import urllib.request


def get(port: int, path: str, token: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def main() -> None:
    port, user_id, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sides = dict(arg.split("=") for arg in sys.argv[4:])
    failures = []

    status, _, body = get(port, "/api/me", token)
    me = json.loads(body)
    if status != 200 or me.get("id") != user_id:
        failures.append(f"GET /api/me with a seeded token: {status} {me}, expected the user {user_id}")

    status, headers, body = get(port, f"/api/{user_id}/tasks", token)
    page = json.loads(body)
    total = headers.get("x-total-count")
    print(f"check: the service's page: {len(page)} tasks, X-Total-Count {total}, {len(body)} bytes")
    if status != 200 or not page:
        failures.append(f"the service's list: {status}, {len(page)} tasks")
    for mode, mode_port in sides.items():
        status, headers, body = get(int(mode_port), f"/api/{user_id}/tasks", token)
        theirs = json.loads(body)
        print(f"check: {mode}: {len(theirs)} tasks, X-Total-Count {headers.get('x-total-count')}, {len(body)} bytes")
        if mode == "ceiling":
            same = len(theirs) == len(page) and all(a.keys() == b.keys() for a, b in zip(theirs, page, strict=True))
        else:
            same = theirs == page and headers.get("x-total-count") == total
        if not same:
            diff = next((f"task {i}: service {a}, {mode} {b}" for i, (a, b) in enumerate(zip(page, theirs, strict=False)) if a != b), "")
            failures.append(f"{mode} answers another page than the service: {len(theirs)} vs {len(page)} tasks; {diff}")
    if failures:
        print("\n".join(f"bench: {failure}" for failure in failures), file=sys.stderr)
        sys.exit(1)
    print("check: every baseline answers the service's page; the seeded token speaks for its user on /api/me")


if __name__ == "__main__":
    main()
