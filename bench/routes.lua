-- wrk script: one route of the API, for many users.
--
--   wrk ... http://127.0.0.1:PORT -- ROUTE ROWS_FILE PREFIX [QUERY]
--
-- ROUTE is list, list-not-modified, get, create, replace, patch, complete, delete, tags or signup. QUERY (list only) follows
-- the list's path as it is: "?priority=high&tag=work&sort=due_at". ROWS_FILE holds one
-- `user_id token task_id` line per seeded user (bench/seed.py writes it; for list-not-modified,
-- bench/v3.py adds a fourth field, the list's weak ETag, sent as If-None-Match); each request
-- takes the next line, so the load rotates over every user's token and tasks. For delete,
-- each line names a task of its own, and there must be more lines than requests: a second
-- pass would find the tasks gone.
-- PREFIX makes signup emails unique across runs and phases.
-- done() prints one `BENCH_JSON {...}` line that bench/report.py reads.

local route, prefix, query
local requests = {} -- prebuilt per row, for every route but signup
local index = 0
local counter = 0
local thread_number = 0

-- setup() runs in wrk's main Lua state; thread:set() makes a global in the thread's own.
local next_thread = 0

function setup(thread)
    next_thread = next_thread + 1
    thread:set("bench_thread_id", next_thread)
end

local function thread_id()
    return bench_thread_id or 1
end

local function json_headers(token)
    return { ["Authorization"] = token, ["Content-Type"] = "application/json" }
end

function init(args)
    route, prefix, query = args[1], args[3] or "bench", args[4] or ""
    local build = {
        list = function(user, token, task)
            return wrk.format("GET", "/api/" .. user .. "/tasks" .. query, { ["Authorization"] = token })
        end,
        ["list-not-modified"] = function(user, token, task, etag)
            return wrk.format("GET", "/api/" .. user .. "/tasks" .. query, { ["Authorization"] = token, ["If-None-Match"] = etag })
        end,
        tags = function(user, token, task)
            return wrk.format("GET", "/api/" .. user .. "/tags", { ["Authorization"] = token })
        end,
        get = function(user, token, task)
            return wrk.format("GET", "/api/" .. user .. "/tasks/" .. task, { ["Authorization"] = token })
        end,
        create = function(user, token, task)
            return wrk.format("POST", "/api/" .. user .. "/tasks", json_headers(token),
                '{"title":"bench created","description":"made by bench/routes.lua","priority":"high",' ..
                '"due_at":"2026-12-24T18:00:00+01:00","tags":["Work","bench"]}')
        end,
        replace = function(user, token, task)
            return wrk.format("PUT", "/api/" .. user .. "/tasks/" .. task, json_headers(token),
                '{"title":"bench replaced","description":"replaced by bench/routes.lua","completed":false,' ..
                '"priority":"low","due_at":"2026-12-31T09:30:00Z","tags":["home"]}')
        end,
        delete = function(user, token, task)
            return wrk.format("DELETE", "/api/" .. user .. "/tasks/" .. task, { ["Authorization"] = token })
        end,
        patch = function(user, token, task)
            return wrk.format("PATCH", "/api/" .. user .. "/tasks/" .. task, json_headers(token),
                '{"title":"bench renamed"}')
        end,
        complete = function(user, token, task)
            return wrk.format("PATCH", "/api/" .. user .. "/tasks/" .. task .. "/complete", json_headers(token),
                '{"completed":true}')
        end,
    }
    if route ~= "signup" then
        if build[route] == nil then
            error("unknown route " .. tostring(route))
        end
        -- delete: QUERY is wrk's thread count, and each thread takes every n-th line, so
        -- that no two delete one task.
        local threads = route == "delete" and tonumber(query) or 1
        local line_number = 0
        for line in io.lines(args[2]) do
            local user, token, task, etag = line:match("^(%d+)%s+(%S+)%s+(%d+)%s*(%S*)$")
            if user then
                line_number = line_number + 1
                if line_number % threads == (thread_id() - 1) % threads then
                    table.insert(requests, build[route](user, "Bearer " .. token, task, etag))
                end
            end
        end
        if #requests == 0 then
            error("no rows in " .. tostring(args[2]))
        end
        if route ~= "delete" then
            -- Threads start at different users.
            index = (thread_id() - 1) * 97 % #requests
        end
    end
    thread_number = thread_id()
end

function request()
    if route == "signup" then
        counter = counter + 1
        local body = string.format('{"email":"%s-%d-%d@bench.example.com","password":"bench password 42"}',
            prefix, thread_number, counter)
        return wrk.format("POST", "/api/auth/signup", { ["Content-Type"] = "application/json" }, body)
    end
    index = index % #requests + 1
    return requests[index]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.mean, latency.stdev, latency.max,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
