// The README's frontend flow, written against types generated from the service's own
// /openapi.json (`npx openapi-typescript <API>/openapi.json -o todo-api.d.ts`, default options)
// and called with openapi-fetch. tests/test_typed_client.py puts the generated todo-api.d.ts
// beside a copy of this file, compiles it with `tsc --strict --noEmit`, runs it with tsx and
// reads what it prints: one JSON line per step.
// Every call below compiles only because the generated types allow it.
import createClient from "openapi-fetch";
import type { components, paths } from "./todo-api";

declare const process: { env: Record<string, string | undefined>; exitCode?: number };

type Task = components["schemas"]["Task"];

const API = process.env.TODO_API_URL ?? "http://localhost:8000";
const email = process.env.TODO_EMAIL ?? "ada@example.com";
const password = "correct horse battery";

const print = (step: string, fields: Record<string, unknown>) => console.log(JSON.stringify({ step, ...fields }));
const brief = (task: Task) => ({
  id: task.id,
  title: task.title,
  description: task.description,
  completed: task.completed,
  priority: task.priority,
  due_at: task.due_at,
  tags: task.tags,
});

// Signing up and logging in need no token.
const auth = createClient<paths>({ baseUrl: API });

const signup = await auth.POST("/api/auth/signup", { body: { email, password } });
if (!signup.data) throw new Error(`signup: ${signup.response.status}`);
print("signup", { status: signup.response.status, id: signup.data.id, email: signup.data.email });

const login = await auth.POST("/api/auth/login", { body: { email, password } });
if (!login.data) throw new Error(`login: ${login.response.status}`);
print("login", { status: login.response.status, token_type: login.data.token_type, user: login.data.user });

// Every other call sends the token (a Better Auth frontend sends `(await authClient.token()).data.token`).
const api = createClient<paths>({ baseUrl: API, headers: { Authorization: `Bearer ${login.data.access_token}` } });

const me = await api.GET("/api/me");
if (!me.data) throw new Error(`me: ${me.response.status}`);
const user_id = me.data.id; // the {user_id} of every task path
print("me", { status: me.response.status, id: user_id, email: me.data.email });

// A task with only a title: the other fields take their defaults.
const milk = await api.POST("/api/{user_id}/tasks", {
  params: { path: { user_id } },
  body: { title: "Buy milk" },
});
if (!milk.data) throw new Error(`create: ${milk.response.status}`);
print("create-title-only", {
  status: milk.response.status,
  task: brief(milk.data),
  etag: milk.response.headers.get("ETag"),
  location: milk.response.headers.get("Location"),
});

// A task with every field.
const gift = await api.POST("/api/{user_id}/tasks", {
  params: { path: { user_id } },
  body: {
    title: "Wrap the presents",
    description: "before the guests arrive",
    completed: false,
    priority: "high",
    due_at: "2026-12-24T18:00:00+01:00",
    tags: ["Home", "december"],
  },
});
if (!gift.data) throw new Error(`create: ${gift.response.status}`);
print("create-every-field", { status: gift.response.status, task: brief(gift.data), etag: gift.response.headers.get("ETag") });

// The list, filtered and sorted; X-Total-Count counts the matches before limit and offset.
const urgent = await api.GET("/api/{user_id}/tasks", {
  params: { path: { user_id }, query: { priority: "high,medium", tag: ["home"], completed: false, sort: "-due_at" } },
});
if (!urgent.data) throw new Error(`list: ${urgent.response.status}`);
print("list-filtered", {
  status: urgent.response.status,
  ids: urgent.data.map((task) => task.id),
  total: Number(urgent.response.headers.get("X-Total-Count")),
});

const firstPage = await api.GET("/api/{user_id}/tasks", {
  params: { path: { user_id }, query: { sort: "title", limit: 1 } },
});
if (!firstPage.data) throw new Error(`list: ${firstPage.response.status}`);
print("list-first-page", {
  status: firstPage.response.status,
  titles: firstPage.data.map((task) => task.title),
  total: Number(firstPage.response.headers.get("X-Total-Count")),
  link: firstPage.response.headers.get("Link"),
});

// One task and its version; If-None-Match with that version: 304, nothing to download again.
const task_id = milk.data.id;
const fetched = await api.GET("/api/{user_id}/tasks/{task_id}", { params: { path: { user_id, task_id } } });
if (!fetched.data) throw new Error(`get: ${fetched.response.status}`);
const version = fetched.response.headers.get("ETag") ?? "";
const unchanged = await api.GET("/api/{user_id}/tasks/{task_id}", {
  params: { path: { user_id, task_id }, header: { "If-None-Match": version } },
});
print("get", { status: fetched.response.status, etag: version, if_none_match_status: unchanged.response.status });

// A conditional update: only if nobody changed the task since we read it.
const patched = await api.PATCH("/api/{user_id}/tasks/{task_id}", {
  params: { path: { user_id, task_id }, header: { "If-Match": version } },
  body: { title: "Buy oat milk", tags: ["shopping"] },
});
if (!patched.data) throw new Error(`patch: ${patched.response.status}`);
const current = patched.response.headers.get("ETag") ?? "";
print("patch-if-match", { status: patched.response.status, task: brief(patched.data), etag: current });

// The same If-Match again: the task has changed since, so 412 and nothing is written.
const stale = await api.PATCH("/api/{user_id}/tasks/{task_id}", {
  params: { path: { user_id, task_id }, header: { "If-Match": version } },
  body: { title: "Buy soy milk" },
});
print("patch-stale-if-match", { status: stale.response.status, error_status: stale.error?.status, title: stale.error?.title });

const done = await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", {
  params: { path: { user_id, task_id }, header: { "If-Match": current } },
  body: { completed: true },
});
if (!done.data) throw new Error(`complete: ${done.response.status}`);
print("complete", { status: done.response.status, completed: done.data.completed, etag: done.response.headers.get("ETag") });

const deleted = await api.DELETE("/api/{user_id}/tasks/{task_id}", {
  params: { path: { user_id, task_id }, header: { "If-Match": done.response.headers.get("ETag") ?? "" } },
});
print("delete", { status: deleted.response.status });

// A body the types allow but the service refuses: a due date without a time and offset.
// The answer is problem+json; errors[0].field names the field to show the message beside.
const invalid = await api.POST("/api/{user_id}/tasks", {
  params: { path: { user_id } },
  body: { title: "Call the plumber", due_at: "2026-12-24" },
});
print("invalid", {
  status: invalid.response.status,
  content_type: invalid.response.headers.get("Content-Type"),
  field: invalid.error?.errors?.[0]?.field,
  message: invalid.error?.errors?.[0]?.message,
});

// ---- Version 3: the task's new fields, the change feed, and a ticket for the event stream ----

type Changes = components["schemas"]["Changes"];
type Entry = Changes["changes"][number];
// The v3 fields, exactly as the generated Task type has them (tsc fails if they differ).
type V3Fields = {
  recurrence: { rule: string; from: "due" | "completion" } | null;
  time_zone: string;
  reminders: ({ minutes_before: number } | { at: string })[];
  series_id: number | null;
  next_id: number | null;
};
const v3 = (task: Task): V3Fields => ({
  recurrence: task.recurrence,
  time_zone: task.time_zone,
  reminders: task.reminders,
  series_id: task.series_id,
  next_id: task.next_id,
});
const backwards: Pick<Task, keyof V3Fields> = v3(gift.data); // and the other way round

// The feed loop a client runs: every page at once while has_more, then keep the cursor.
// Each entry is a task in its latest state, or a tombstone ("deleted" in entry) for a deleted one.
const tasks = new Map<number, Task>();
async function sync(since: string | undefined) {
  const pages: { status: number; count: number; has_more: boolean }[] = [];
  const seen: number[] = [];
  const tombstones: number[] = [];
  let cursor = since;
  for (let page = 0; page < 50; page++) {
    const answer = await api.GET("/api/{user_id}/changes", {
      params: { path: { user_id }, query: cursor === undefined ? { limit: 2 } : { since: cursor, limit: 2 } },
    });
    if (!answer.data) throw new Error(`changes: ${answer.response.status}`);
    for (const entry of answer.data.changes satisfies Entry[]) {
      if ("deleted" in entry) {
        tasks.delete(entry.id);
        tombstones.push(entry.id);
      } else {
        tasks.set(entry.id, entry);
        seen.push(entry.id);
      }
    }
    pages.push({ status: answer.response.status, count: answer.data.changes.length, has_more: answer.data.has_more });
    cursor = answer.data.cursor;
    if (!answer.data.has_more) return { pages, seen, tombstones, cursor };
  }
  throw new Error("changes: has_more after 50 pages");
}

// First sync, without since: every task that exists now.
const snapshot = await sync(undefined);
print("changes-snapshot", snapshot);

// Writes after it: a recurring task with reminders, completed (which makes its next
// occurrence), a task created and deleted again, and the gift deleted.
const daily = await api.POST("/api/{user_id}/tasks", {
  params: { path: { user_id } },
  body: {
    title: "Water the plants",
    due_at: "2030-01-07T09:00:00+01:00",
    recurrence: { rule: "FREQ=DAILY;COUNT=3", from: "due" },
    time_zone: "Europe/Berlin",
    reminders: [{ minutes_before: 30 }, { at: "2030-01-07T08:00:00+01:00" }],
  },
});
if (!daily.data) throw new Error(`create: ${daily.response.status}`);
print("create-recurring", { status: daily.response.status, id: daily.data.id, due_at: daily.data.due_at, ...v3(daily.data) });

const dailyDone = await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", {
  params: { path: { user_id, task_id: daily.data.id } },
  body: { completed: true },
});
if (!dailyDone.data) throw new Error(`complete: ${dailyDone.response.status}`);
const next_id = dailyDone.data.next_id;
if (next_id === null) throw new Error("complete: no next occurrence");
const next = await api.GET("/api/{user_id}/tasks/{task_id}", { params: { path: { user_id, task_id: next_id } } });
if (!next.data) throw new Error(`get: ${next.response.status}`);
print("complete-recurring", {
  status: dailyDone.response.status,
  completed: dailyDone.data.completed,
  ...v3(dailyDone.data),
  next: { id: next.data.id, completed: next.data.completed, due_at: next.data.due_at, ...v3(next.data) },
});

const scratch = await api.POST("/api/{user_id}/tasks", { params: { path: { user_id } }, body: { title: "Scratch" } });
if (!scratch.data) throw new Error(`create: ${scratch.response.status}`);
const scratchGone = await api.DELETE("/api/{user_id}/tasks/{task_id}", { params: { path: { user_id, task_id: scratch.data.id } } });
const giftGone = await api.DELETE("/api/{user_id}/tasks/{task_id}", { params: { path: { user_id, task_id: gift.data.id } } });
print("writes", { scratch: scratch.data.id, statuses: [scratch.response.status, scratchGone.response.status, giftGone.response.status] });

// Then from the cursor: what changed since, deletions as tombstones.
const since = await sync(snapshot.cursor);
print("changes-since", since);

// The feed's state is the list's.
const listed = await api.GET("/api/{user_id}/tasks", { params: { path: { user_id }, query: { sort: "created_at", limit: 500 } } });
if (!listed.data) throw new Error(`list: ${listed.response.status}`);
print("changes-end-state", { synced: [...tasks.values()].sort((a, b) => a.id - b.id), listed: listed.data });

// A ticket for a browser's EventSource, which cannot send the Authorization header.
const ticket = await api.POST("/api/{user_id}/events/tickets", { params: { path: { user_id } } });
if (!ticket.data) throw new Error(`ticket: ${ticket.response.status}`);
print("ticket", {
  status: ticket.response.status,
  expires_in: ticket.data.expires_in,
  ticket_chars: /^[A-Za-z0-9_-]+$/.test(ticket.data.ticket),
  cache_control: ticket.response.headers.get("Cache-Control"),
});

// The ticket opens one stream, without the header; its first event is `ready`, whose id is
// the current cursor. A second use is a 401.
const stop = new AbortController();
const timer = setTimeout(() => stop.abort(), 5000);
const stream = await auth.GET("/api/{user_id}/events", {
  params: { path: { user_id }, query: { ticket: ticket.data.ticket } },
  parseAs: "stream",
  signal: stop.signal,
});
let text = "";
if (stream.data) {
  const reader = stream.data.pipeThrough(new TextDecoderStream()).getReader();
  try {
    while (!/event: ready\n(?:.*\n)*?\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
  } catch {
    // aborted after 5 s: `text` holds what came
  }
  stop.abort();
  await reader.cancel().catch(() => {});
}
clearTimeout(timer);
const ready = text.split("\n\n").find((block) => block.includes("event: ready")) ?? "";
const again = await auth.GET("/api/{user_id}/events", {
  params: { path: { user_id }, query: { ticket: ticket.data.ticket } },
  parseAs: "stream",
});
if (again.data) await again.data.cancel(); // an error's body openapi-fetch has read already
print("ticket-stream", {
  status: stream.response.status,
  content_type: stream.response.headers.get("Content-Type"),
  retry: /^retry: \d+$/m.test(text),
  ready_id: /^id: (.*)$/m.exec(ready)?.[1] ?? null,
  second_use_status: again.response.status,
});
