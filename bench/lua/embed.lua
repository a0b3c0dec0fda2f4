-- embed.lua -- page views as the embed (src/assets/tally.js) makes them: the view, a POST to
-- /v1/events of {"type":"view","article":A,"words":W} as text/plain, then, once its answer
-- came, GET /v1/stats?article=A for that article's counts. Articles are Zipf-like (s = 1,
-- `dist=uniform` or `zipf_s=` to change); `words=0` leaves the reading length out of the view
-- (the embed sends it whenever the page has text).
--
-- Requests alternate: every view answered queues one read on the same wrk thread, and that
-- thread's next request (on whichever of its connections is free first) is the read; with no
-- read waiting, a new view. wrk's Lua sees neither connections nor which request an answer is
-- for, so the read is of the oldest view the thread sent that has no read yet: most often the
-- view just answered, else one sent a moment before it (answers of one thread's connections
-- come out of order); and it may go on another connection than its view, as a browser's fetch
-- may. Reads count nothing; events are the views the 200s acknowledged, so events/s is page
-- views/s and requests/s about twice that.
--
-- Left out of each page view: the engage events (a POST when the page is hidden or left, and
-- one a minute while it stays in view, so after the reading and not in the page's first
-- second), the /v1/live stream (data-live only) and tally.js itself (a cached file).
--
-- webdis: HINCRBY bench:<article> views 1, then HGET bench:<article> views.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

-- Articles of views sent and not answered yet (oldest first), and of views answered whose read
-- is not sent yet: this thread's, as the wrk hooks of one thread run in its own Lua state.
local sent = {first = 1, last = 0}
local ready = {first = 1, last = 0}

local function push(q, v)
    q.last = q.last + 1
    q[q.last] = v
end

local function pop(q)
    if q.first > q.last then
        return nil
    end
    local v = q[q.first]
    q[q.first] = nil
    q.first = q.first + 1
    return v
end

-- A page's reading length, as tally.js counts it: a fixed number per article.
local function words(n)
    return 300 + (n * 7919) % 1700
end

local function next_request(ctx, view, read)
    -- wrk calls request() once on the first thread's state before the run, to check the
    -- script (script_verify_request): that view is never sent, so it waits for no answer.
    local verify = ctx.thread_id == 1 and ctx.seq == 1
    local n = not verify and pop(ready)
    if n then
        return read(n)
    end
    n = ctx.pick()
    if not verify then
        push(sent, n)
    end
    return view(n)
end

bench.run {
    events = 1,
    dist = "zipf",
    tally = function(ctx)
        return next_request(ctx, function(n)
            local body = '{"type":"view","article":"' .. bench.article_id(n) .. '"'
            if ctx.opt.words ~= "0" then
                body = body .. ',"words":' .. words(n)
            end
            return bench.post("/v1/events", body .. "}", nil, "text/plain;charset=UTF-8")
        end, function(n)
            return bench.get("/v1/stats?article=" .. bench.article_path(n))
        end)
    end,
    webdis = function(ctx)
        return next_request(ctx, function(n)
            return bench.get("/HINCRBY/" .. bench.webdis_key(n) .. "/views/1")
        end, function(n)
            return bench.get("/HGET/" .. bench.webdis_key(n) .. "/views")
        end)
    end,
    -- A read's answer names its articles (webdis: its command); a view's does not. An error
    -- is neither: it queues no read.
    kind = function(_, status, _, body)
        if status ~= 200 or not body then
            return nil
        end
        if body:find('"articles"', 1, true) or body:find('"HGET"', 1, true) then
            return "read"
        end
        local n = pop(sent)
        if n then
            push(ready, n)
        end
        return "write"
    end,
}
