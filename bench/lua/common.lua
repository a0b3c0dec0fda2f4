-- common.lua -- what every bench scenario shares: arguments, article distributions, request
-- building per target, the quiet tail, counting answers, and one machine-readable line.
--
-- A scenario script loads this file and calls bench.run{...} (see view_uniform.lua).
-- Arguments come after wrk's "--", as key=value:
--   target=tally|nginx|node|webdis
--                               which server is measured (tally, nginx and the Node collector
--                               get the same requests; webdis gets one Redis command per request
--                               in its URL: one HINCRBY, or for a batch one EVALSHA of a script
--                               of as many HINCRBYs as the batch has events)
--   sha=SHA1                    webdis batches: the SHA1 of that script, loaded before the run
--   articles=N                  distinct articles (default 10000)
--   dist=uniform|zipf           how articles are drawn (default: the scenario's); zipf_s=S
--                               the Zipf exponent (default 1)
--   duration=S                  the wrk -d value in seconds (needed for the quiet tail)
--   drain=S                     the last S seconds send nothing new (default 0.5)
--   visitors=N                  dedupe: visitors drawn from N addresses (0: one per request)
--   hot=1                       stats: always the same article
--
-- The quiet tail. wrk stops at -d with requests still in flight; tallyd writes those events
-- although wrk never sees their 200, so tally's counts would be above the 200s by a few. So
-- for the last `drain` seconds no connection sends a new request (delay() holds each one
-- back past the end of the run) while the requests in flight are answered: main_sent ==
-- main_recv in the output line proves for each run that every request sent was answered.
-- Rates are computed over the sending phase only (duration - drain seconds); the latency
-- percentiles cover exactly the requests counted. (Defining delay() costs wrk a zero-length
-- timer per request, the same for every target.)
--
-- Output (from done()): one line "BENCH {json}" with the counters of all threads and wrk's
-- latency percentiles in microseconds.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec_t")

local function now()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local bench = {}

bench.UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    .. "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
bench.NETWORKS = {"facebook", "twitter", "linkedin", "reddit", "whatsapp", "email", "copy"}

-- ---- arguments ----

local function parse_args(args)
    local o = {}
    for _, a in ipairs(args or {}) do
        local k, v = a:match("^([%w_]+)=(.*)$")
        if k then
            o[k] = v
        end
    end
    return o
end

-- ---- articles ----

function bench.article_id(n)
    return "news/2025/article-" .. n
end

function bench.article_path(n) -- percent-encoded for a path segment or a query value
    return "news%2F2025%2Farticle-" .. n
end

function bench.webdis_key(n)
    return "bench:" .. n
end

-- Uniform over 1..N.
local function uniform_sampler(n)
    return function()
        return math.random(n)
    end
end

-- Zipf-like (s = 1 by default): P(k) ~ 1/k^s over ranks 1..N. The cumulative table is built
-- once per thread; a sample is a binary search for a uniform draw.
local function zipf_sampler(n, s)
    local cdf = {}
    local total = 0
    for k = 1, n do
        total = total + 1 / k ^ s
        cdf[k] = total
    end
    return function()
        local u = math.random() * total
        local lo, hi = 1, n
        while lo < hi do
            local mid = math.floor((lo + hi) / 2)
            if cdf[mid] < u then
                lo = mid + 1
            else
                hi = mid
            end
        end
        return lo
    end
end

-- ---- request building ----

local host = "localhost"

local function req_get(path, extra)
    return "GET " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nUser-Agent: " .. bench.UA
        .. "\r\n" .. (extra or "") .. "\r\n"
end

local function req_post(path, body, extra, ctype)
    return "POST " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nUser-Agent: " .. bench.UA
        .. "\r\nContent-Type: " .. (ctype or "application/json") .. "\r\nContent-Length: "
        .. #body .. "\r\n" .. (extra or "") .. "\r\n" .. body
end

bench.get = req_get
bench.post = req_post

function bench.view_json(n)
    return '{"type":"view","article":"' .. bench.article_id(n) .. '"}'
end

function bench.share_json(n, network)
    return '{"type":"share","article":"' .. bench.article_id(n) .. '","network":"' .. network .. '"}'
end

-- ---- counting ----

-- Counters of this thread (read by done() through thread:get; plain numbers only).
c_main_sent, c_main_recv, c_ok, c_non200, c_accepted, c_ignored = 0, 0, 0, 0, 0, 0
-- Events one counting request of this thread's target carries.
c_epr = 1

-- ---- the wrk hooks ----

local threads = {}
local next_id = 0

function bench.run(spec)
    -- spec.events: events carried by one counting request (1 for reads)
    -- spec.webdis_events: events one webdis request carries (default 1)
    -- spec.tally(ctx) / spec.webdis(ctx): return the next request string for that target
    -- (nginx and node get spec.tally's requests); ctx has pick(), opt, thread_id, seq
    -- spec.tally_count(status, headers, body): accepted, ignored of one 200 (default: JSON body)
    local opt, pick, deadline, count, build
    local ctx = {seq = 0}

    function setup(thread)
        next_id = next_id + 1
        thread:set("thread_id", next_id)
        threads[#threads + 1] = thread
    end

    function init(args)
        opt = parse_args(args)
        ctx.opt = opt
        ctx.thread_id = thread_id or 1
        host = wrk.headers["Host"] or wrk.host
        math.randomseed(os.time() * 1000 + ctx.thread_id * 7919)
        local n = tonumber(opt.articles or "10000")
        if opt.hot == "1" then
            pick = function()
                return 1
            end
        elseif (opt.dist or spec.dist) == "zipf" then
            pick = zipf_sampler(n, tonumber(opt.zipf_s or "1"))
        else
            pick = uniform_sampler(n)
        end
        ctx.pick = pick
        local duration = tonumber(opt.duration or "5")
        local drain = tonumber(opt.drain or "0.5")
        deadline = now() + duration - drain

        local target = opt.target or "tally"
        if target == "webdis" then
            build = spec.webdis
            c_epr = spec.webdis_events or 1
            count = function()
                return c_epr, 0
            end
        else
            build = spec.tally
            c_epr = spec.events or 1
            count = spec.tally_count or function(_, _, body)
                local a = body and body:match('"accepted":(%d+)')
                local i = body and body:match('"ignored":(%d+)')
                return tonumber(a) or 0, tonumber(i) or 0
            end
        end
    end

    -- 0 while sending; in the quiet tail, longer than any run, so nothing more is sent.
    function delay()
        if now() >= deadline then
            return 3600000
        end
        return 0
    end

    function request()
        c_main_sent = c_main_sent + 1
        ctx.seq = ctx.seq + 1
        return build(ctx)
    end

    function response(status, headers, body)
        c_main_recv = c_main_recv + 1
        if status == 200 then
            c_ok = c_ok + 1
            local a, i = count(status, headers, body)
            c_accepted = c_accepted + a
            c_ignored = c_ignored + i
        else
            c_non200 = c_non200 + 1
        end
    end

    function done(summary, latency, _)
        local t = {main_sent = 0, main_recv = 0, ok = 0, non200 = 0,
                   accepted = 0, ignored = 0}
        local epr = 1
        for _, th in ipairs(threads) do
            epr = th:get("c_epr") or epr
            t.main_sent = t.main_sent + (th:get("c_main_sent") or 0)
            t.main_recv = t.main_recv + (th:get("c_main_recv") or 0)
            t.ok = t.ok + (th:get("c_ok") or 0)
            t.non200 = t.non200 + (th:get("c_non200") or 0)
            t.accepted = t.accepted + (th:get("c_accepted") or 0)
            t.ignored = t.ignored + (th:get("c_ignored") or 0)
        end
        -- wrk calls request() once on the first thread's state before the run, to check the
        -- script (script_verify_request); that request is never sent.
        t.main_sent = t.main_sent - 1
        local e = summary.errors
        local parts = {}
        local function put(k, v)
            parts[#parts + 1] = string.format('"%s":%s', k, string.format("%.0f", v))
        end
        for _, k in ipairs({"main_sent", "main_recv", "ok", "non200", "accepted",
                            "ignored"}) do
            put(k, t[k])
        end
        put("events_per_request", epr)
        put("wrk_requests", summary.requests)
        put("duration_us", summary.duration)
        put("err_connect", e.connect)
        put("err_read", e.read)
        put("err_write", e.write)
        put("err_status", e.status)
        put("err_timeout", e.timeout)
        put("p50_us", latency:percentile(50))
        put("p90_us", latency:percentile(90))
        put("p99_us", latency:percentile(99))
        put("p999_us", latency:percentile(99.9))
        put("max_us", latency.max)
        io.write("BENCH {" .. table.concat(parts, ",") .. "}\n")
    end
end

return bench
