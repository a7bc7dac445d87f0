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
