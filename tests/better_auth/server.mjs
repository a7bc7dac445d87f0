// Better Auth issuing the access tokens todo-backend accepts.
//
// The `auth` object below is what a Next.js app puts in lib/auth.ts; the rest of the file
// serves it over plain Node HTTP for the interop test (tests/test_better_auth.py).
//   BETTER_AUTH_URL     this server's base URL: the tokens' iss and aud, todo-backend's
//                       JWT_ISSUER and JWT_AUDIENCE (its JWKS_URL is BETTER_AUTH_URL/api/auth/jwks)
//   BETTER_AUTH_SECRET  encrypts the stored signing keys and signs the session cookies
//   BACKEND_URL         todo-backend's base URL, called at sign-up
// Run: npm ci && BETTER_AUTH_URL=http://127.0.0.1:3000 BACKEND_URL=http://127.0.0.1:8000 node server.mjs

import { createServer } from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { APIError } from "better-auth/api";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";
import { createJwk } from "better-auth/plugins/jwt";

const BACKEND_URL = process.env.BACKEND_URL ?? "http://127.0.0.1:8000";

// The backend's id for this email and password: a new account, or an existing one whose
// password matches. The id is never taken from the browser, so nobody can claim
// someone else's account (and with it their tasks) by sending another id.
async function backendUserId({ email, password }) {
  const post = (path) =>
    fetch(BACKEND_URL + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
  let response = await post("/api/auth/signup"); // 201 {id, email, created_at}
  if (response.status === 409) response = await post("/api/auth/login"); // 200 {user: {id}}
  const body = await response.json();
  if (!response.ok) {
    // A problem+json body: detail, and for an invalid field errors: [{field, message}].
    const why = body.errors?.map((error) => `${error.field} ${error.message}`).join("; ") || body.detail;
    throw new APIError("BAD_REQUEST", { message: `todo-backend: ${why}` });
  }
  return String(body.user?.id ?? body.id);
}

// The token plugin: defaults (EdDSA / Ed25519 keys, JWKS at /api/auth/jwks, 15-minute
// tokens, iss and aud = baseURL) except the subject, which is the backend's user id.
const jwtOptions = {
  jwt: { getSubject: (session) => session.user.backendUserId },
};

export const auth = betterAuth({
  baseURL: process.env.BETTER_AUTH_URL,
  secret: process.env.BETTER_AUTH_SECRET,
  // The memory adapter keeps everything in this process. With your database instead, run
  // `npx @better-auth/cli migrate`: it adds the jwks table and the backendUserId column.
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  user: {
    additionalFields: {
      // Returned with the session (session.user.backendUserId, the {user_id} of the task
      // URLs); input: false, so only the hook below sets it.
      backendUserId: { type: "string", required: false, input: false },
    },
  },
  databaseHooks: {
    user: {
      create: {
        // Email sign-up: create or sign in to the backend account with the same credentials.
        before: async (user, ctx) => ({ data: { ...user, backendUserId: await backendUserId(ctx.body) } }),
      },
    },
  },
  plugins: [jwt(jwtOptions)],
});

// ---- Test harness, not part of an app: Better Auth on plain Node HTTP, on loopback. ----

const url = new URL(process.env.BETTER_AUTH_URL ?? "http://127.0.0.1:3000");
const handleAuth = toNodeHandler(auth);

createServer(async (request, response) => {
  if (request.method === "POST" && request.url === "/test/rotate-keys") {
    // What the plugin does when a key outlives jwks.rotationInterval: create a new key,
    // which signs every token from now on; the old one stays in the JWKS.
    const key = await createJwk({ context: await auth.$context }, jwtOptions);
    response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ kid: key.id }));
  } else {
    handleAuth(request, response);
  }
}).listen(Number(url.port || 3000), url.hostname, () => console.log(`better-auth ready on ${url.origin}`));
