// The frontend's side of tests/test_browser.py: what a Next.js page does with Better Auth's
// client and the backend. esbuild bundles it (with better-auth/client) for the browser; the
// page is served from Better Auth's origin, and the backend's URL comes in as ?api=.
// The test calls window.app's functions; each writes a line on the page, for the screenshot.
import { createAuthClient } from "better-auth/client";
import { jwtClient } from "better-auth/client/plugins";

// No baseURL: Better Auth is on this page's own origin, as in a Next.js app.
const authClient = createAuthClient({ plugins: [jwtClient()] });
const API = new URL(location.href).searchParams.get("api");
document.getElementById("api").textContent = API;

// The response headers a frontend wants; the browser lets the page read only the CORS-safelisted
// ones and those the backend exposes (Access-Control-Expose-Headers).
const WANTED = ["content-type", "etag", "link", "location", "retry-after", "x-request-id", "x-total-count"];

function show(line) {
  const item = document.createElement("li");
  item.textContent = line;
  document.getElementById("log").append(item);
}

async function signUp(name, email, password) {
  const { data, error } = await authClient.signUp.email({ name, email, password });
  show(`Better Auth sign-up ${email}: ${error ? error.message : "ok"}`);
  return { id: data?.user.id ?? null, error: error?.message ?? null };
}

async function signIn(email, password) {
  const { data, error } = await authClient.signIn.email({ email, password });
  show(`Better Auth sign-in ${email}: ${error ? error.message : "ok"}`);
  return { id: data?.user.id ?? null, error: error?.message ?? null };
}

// The README's line: GET /api/auth/token on this origin (the session cookie), a 15-minute JWT.
async function token() {
  const { data, error } = await authClient.token();
  if (error) throw new Error(`authClient.token(): ${error.message}`);
  return data.token;
}

// One call to the backend, across origins, with a fresh token; what the page could read of the answer.
async function call(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${await token()}`, ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let result;
  try {
    const response = await fetch(API + path, init);
    const text = await response.text();
    result = {
      status: response.status,
      headers: Object.fromEntries(WANTED.map((name) => [name, response.headers.get(name)])),
      readable: [...response.headers.keys()].sort(),
      body: text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text,
    };
    show(`${method} ${path} → ${response.status}`);
  } catch (error) {
    result = { error: error.name, message: error.message };
    show(`${method} ${path} → ${error.name}: ${error.message}`);
  }
  return result;
}

// Live updates, the README's "Live updates in a browser" line for line: a ticket (EventSource
// cannot send the Authorization header), then the stream. A ticket opens one stream, so on an
// error (the stream ended, `expired`, a replica restarted): a fresh ticket, and ?since= the
// last event id, from which nothing is missed.
function live(userId, onEvent) {
  let lastId = null;
  async function connect() {
    try {
      const answer = await fetch(`${API}/api/${userId}/events/tickets`, {
        method: "POST", headers: { Authorization: `Bearer ${await token()}` },
      });
      if (!answer.ok) throw new Error(`ticket: ${answer.status}`);
      const url = new URL(`${API}/api/${userId}/events`);
      url.searchParams.set("ticket", (await answer.json()).ticket);
      if (lastId) url.searchParams.set("since", lastId);
      const source = new EventSource(url);
      for (const type of ["ready", "change", "resync"]) {
        source.addEventListener(type, (event) => {
          lastId = type === "resync" ? null : event.lastEventId; // resync: GET /changes again, without since
          onEvent(type, event.lastEventId, JSON.parse(event.data));
        });
      }
      source.onerror = () => { source.close(); setTimeout(connect, 1000); };
    } catch {
      setTimeout(connect, 1000);
    }
  }
  connect();
}

// For the test: what each stream sent, with the moment it arrived (Date.now()).
const events = [];
function listen(userId) {
  show(`live events of user ${userId}`);
  live(userId, (type, id, data) => {
    events.push({ type, id, data, at: Date.now() });
    show(`event ${type} ${id}`);
  });
}

window.app = { signUp, signIn, token, call, listen, events };
