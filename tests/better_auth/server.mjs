// Better Auth issuing the access tokens todo-backend accepts, left at its defaults.
//
// The `auth` object below is what a Next.js app puts in lib/auth.ts: `jwt()` is the one line
// todo-backend asks for. No getSubject, no hook, no extra field, no call to the backend: the
// backend links each Better Auth user (iss, sub) to an account of its own on their first token.
// The rest of the file serves it over plain Node HTTP for the interop test
// (tests/test_better_auth.py).
//   BETTER_AUTH_URL         this server's base URL: the tokens' iss and aud, todo-backend's
//                           JWT_ISSUER and JWT_AUDIENCE (its JWKS_URL is BETTER_AUTH_URL/api/auth/jwks)
//   BETTER_AUTH_SECRET      encrypts the stored signing keys and signs the session cookies
//   BETTER_AUTH_SERIAL_IDS  1: number users 1, 2, 3… (generateId: "serial"), so a token's sub is "1"
//   MCP_RESOURCE            todo-backend's /mcp URL: when set, Better Auth is also the OAuth 2.1
//                           authorization server for MCP clients (@better-auth/oauth-provider),
//                           issuing access tokens whose aud holds that URL
//   TEST_PAGE_DIR           test-only: serve this folder's index.html and app.js at /test/page/,
//                           on this origin (the browser test, tests/test_browser.py)
// Run: npm ci && BETTER_AUTH_URL=http://127.0.0.1:3000 BETTER_AUTH_SECRET=… node server.mjs

import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { basename, join } from "node:path";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { fromNodeHeaders, toNodeHandler } from "better-auth/node";
import { anonymous, jwt, magicLink } from "better-auth/plugins";
import { createJwk } from "better-auth/plugins/jwt";
import { oauthProvider } from "@better-auth/oauth-provider";

// Where sendMagicLink puts each link: an app emails it instead (see sendMagicLink below).
const magicLinks = new Map(); // email → the last link sent to it
const mcpResource = process.env.MCP_RESOURCE;

export const auth = betterAuth({
  baseURL: process.env.BETTER_AUTH_URL,
  secret: process.env.BETTER_AUTH_SECRET,
  // The memory adapter keeps everything in this process. With your database instead, run
  // `npx @better-auth/cli migrate`: it adds the jwks table (and the anonymous plugin's column).
  database: memoryAdapter({
    ...{ user: [], session: [], account: [], verification: [], jwks: [] },
    // The OAuth provider's tables (`npx @better-auth/cli migrate` makes them in a database).
    ...{ oauthClient: [], oauthAccessToken: [], oauthRefreshToken: [], oauthConsent: [], oauthResource: [] },
    ...{ oauthClientResource: [], oauthClientAssertion: [] },
  }),
  // Better Auth's own user ids: random strings by default; "serial" numbers them from 1 (the
  // memory adapter supports it), which todo-backend must never take for its own user ids.
  ...(process.env.BETTER_AUTH_SERIAL_IDS === "1" ? { advanced: { database: { generateId: "serial" } } } : {}),
  emailAndPassword: { enabled: true },
  plugins: [
    // The token plugin with its defaults: EdDSA / Ed25519 keys, JWKS at /api/auth/jwks,
    // 15-minute tokens from GET /api/auth/token, iss and aud = baseURL, sub = the user's id.
    // With the OAuth provider, jwt.issuer is set to the base URL, which is what jwt() puts in
    // iss by default anyway: the provider's access tokens would otherwise name baseURL +
    // "/api/auth", and todo-backend accepts one issuer (JWT_ISSUER), so that Better Auth's user
    // (iss, sub) is one backend account whichever kind of token it comes with.
    mcpResource ? jwt({ jwt: { issuer: process.env.BETTER_AUTH_URL } }) : jwt(),
    // Better Auth as MCP's authorization server: authorization code + PKCE, access tokens as
    // JWTs signed with the jwt plugin's key (the same JWKS), aud = the `resource` asked for.
    ...(mcpResource
      ? [oauthProvider({ loginPage: "/sign-in", consentPage: "/consent", resources: [mcpResource], enforcePerClientResources: false })]
      : []),
    anonymous(), // POST /api/auth/sign-in/anonymous: a user with no email of their own
    magicLink({
      // An app emails `url` to `email` here; the test harness below reads it instead.
      sendMagicLink: async ({ email, url }) => {
        magicLinks.set(email.toLowerCase(), url);
      },
    }),
  ],
});

// ---- Test harness, not part of an app: Better Auth on plain Node HTTP, on loopback. ----

const url = new URL(process.env.BETTER_AUTH_URL ?? "http://127.0.0.1:3000");
const handleAuth = toNodeHandler(auth);
const json = (response, status, body) =>
  response.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(body));

createServer(async (request, response) => {
  const { pathname, searchParams } = new URL(request.url, url.origin);
  if (request.method === "POST" && pathname === "/test/rotate-keys") {
    // What the plugin does when a key outlives jwks.rotationInterval: create a new key,
    // which signs every token from now on; the old one stays in the JWKS.
    const jwtOptions = auth.options.plugins.find((plugin) => plugin.id === "jwt").options;
    const key = await createJwk({ context: await auth.$context }, jwtOptions);
    json(response, 200, { kid: key.id });
  } else if (request.method === "POST" && pathname === "/test/oauth-client") {
    // Register an OAuth client for the signed-in user (the admin endpoint is server-only): the
    // body is RFC 7591 client metadata; the answer has its client_id.
    let body = "";
    for await (const chunk of request) body += chunk;
    try {
      json(response, 201, await auth.api.adminCreateOAuthClient({ body: JSON.parse(body), headers: fromNodeHeaders(request.headers) }));
    } catch (error) {
      json(response, error.statusCode ?? 500, { message: String(error.message ?? error), ...error.body });
    }
  } else if (request.method === "GET" && pathname === "/test/magic-link") {
    // The mailbox: the last magic link sent to ?email=, as {url}; 404 if none was sent.
    const link = magicLinks.get((searchParams.get("email") ?? "").toLowerCase());
    link ? json(response, 200, { url: link }) : json(response, 404, { message: "no magic link sent to this email" });
  } else if (request.method === "GET" && process.env.TEST_PAGE_DIR && pathname.startsWith("/test/page/")) {
    // Test-only, for tests/test_browser.py: its page and bundle, read from TEST_PAGE_DIR and
    // served on Better Auth's own origin, as a Next.js app serves its pages beside Better Auth.
    const types = { "index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8" };
    const name = basename(pathname);
    const body = types[name] && (await readFile(join(process.env.TEST_PAGE_DIR, name)).catch(() => null));
    body ? response.writeHead(200, { "Content-Type": types[name] }).end(body) : json(response, 404, { message: "no such page" });
  } else {
    handleAuth(request, response);
  }
}).listen(Number(url.port || 3000), url.hostname, () => console.log(`better-auth ready on ${url.origin}`));
