// Calls the service refuses with a 400, which the generated types must refuse at compile time.
// Compiled beside flow.ts (tsc --strict --noEmit) and never run: each `@ts-expect-error` must
// meet an error on the next line, or tsc fails with "Unused '@ts-expect-error' directive".
// Not here: an unknown field (`id: 7`) or query parameter beside valid ones. openapi-fetch
// infers its options generically, so TypeScript's excess-property check does not apply
// (openapi-ts/openapi-typescript#1769); the service answers those with a 400 naming them.
import createClient from "openapi-fetch";
import type { paths } from "./todo-api";

const api = createClient<paths>({ baseUrl: "http://localhost:8000" });
const path = { user_id: 1, task_id: 1 };

export async function misuse() {
  // @ts-expect-error a task needs a title
  await api.POST("/api/{user_id}/tasks", { params: { path }, body: { description: "no title" } });
  // @ts-expect-error completed is a JSON boolean, not a string
  await api.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "t", completed: "yes" } });
  // @ts-expect-error priorities are exact and lower-case
  await api.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "t", priority: "High" } });
  // @ts-expect-error tags are a list
  await api.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "t", tags: "home" } });
  // @ts-expect-error the path's user id is a number
  await api.GET("/api/{user_id}/tasks", { params: { path: { user_id: "me" } } });
  // @ts-expect-error sorts are exact and lower-case
  await api.GET("/api/{user_id}/tasks", { params: { path, query: { sort: "Title" } } });
  // @ts-expect-error complete takes a JSON boolean
  await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", { params: { path }, body: { completed: "true" } });
  // @ts-expect-error no such route
  await api.GET("/api/{user_id}/todos", { params: { path } });

  // @ts-expect-error a rule counts from "due" or from "completion"
  await api.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "t", recurrence: { rule: "FREQ=DAILY", from: "now" } } });
  // @ts-expect-error a reminder is {minutes_before} or {at}
  await api.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "t", reminders: [{ minutes: 30 }] } });
  // @ts-expect-error the feed's limit is a number
  await api.GET("/api/{user_id}/changes", { params: { path, query: { limit: "10" } } });
  // @ts-expect-error a ticket takes no body
  await api.POST("/api/{user_id}/events/tickets", { params: { path }, body: { ttl: 600 } });

  const { data: feed } = await api.GET("/api/{user_id}/changes", { params: { path } });
  const [entry] = feed?.changes ?? [];
  // @ts-expect-error an entry may be a tombstone: check `"deleted" in entry` first
  entry?.title;
  if (entry !== undefined && !("deleted" in entry)) entry.title satisfies string;

  const { data } = await api.GET("/api/{user_id}/tasks/{task_id}", { params: { path } });
  // @ts-expect-error data is undefined when the answer was an error: check it first
  data.title;
  // @ts-expect-error a task's description may be null
  (data?.description satisfies string | undefined);
}
