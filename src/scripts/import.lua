-- import.lua -- applies one import (POST /v1/import) at once: every line's counts, the
-- import's record in the list GET /v1/imports reads, and its Idempotency-Key marker; or, when
-- the marker is there already, nothing.
--
-- KEYS[1]  the import's marker, P{import}m:<Idempotency-Key>: "<digest> <lines>" once applied
-- ARGV     P digest marker_ttl record keep now model line...
--          (digest names the body, 16 hex digits; record is the JSON the list keeps, newest
--          first, at most keep of them; now is the collector's clock, Unix seconds; model is
--          include/tally/model.h as tally_model_arg() writes it, see model.lua)
--   line:  tag id day views comments shares nshares (network count)...
--          (day is a day number, days since 1970-01-01, or "" for the all-time totals only;
--          counts are integers from 0 to 10^12, shares the sum of the nshares pairs that
--          follow, each count > 0)
-- Returns {"ok", lines} when applied now, {"replay", lines} when this body was applied
-- before under the key, {"reused", 0} when another body holds the key, {"limit", line} when
-- line (its number among the import's lines, from 1) would take a counter to LIMIT (below)
-- or more (in both cases nothing is applied).
--
-- Every value was validated by the collector, and a first pass, before any write, checks
-- that no counter the import adds to reaches LIMIT, so that no HINCRBY overflows. Counts
-- reach Redis as the collector's digits, each counter's sum is Redis's own (HINCRBY line by
-- line): Lua numbers only check the limit. What is left to fail half-way is Redis itself (a
-- script killed, an ACL refusing a command after the first): then some lines may be applied
-- and the marker is not set.
--
-- Imported counts go where the write path's would: the totals hash, the all-time top list,
-- the site totals and, with a day, that day's bucket (its daily series and top list). Not
-- the hourly buckets (an import knows no hour) and not visitors: those estimate real
-- visitors, which imported views do not name. A day older than the daily buckets' lifetime
-- adds to the all-time counts only.

local P = ARGV[1]
local digest = ARGV[2]

local marker = redis.call('GET', KEYS[1])
if marker then
    local d, n = string.match(marker, '^(%x+) (%d+)$')
    if d == digest then
        return {'replay', tonumber(n)}
    end
    return {'reused', 0}
end

local marker_ttl = tonumber(ARGV[3])
local record = ARGV[4]
local keep = tonumber(ARGV[5])
local now = tonumber(ARGV[6])
local DAY_TTL = model_of(ARGV[7]).day_ttl -- the daily buckets' lifetime
local FIRST = 8 -- the first line's first argument
local pos = FIRST

local function take()
    local v = ARGV[pos]
    pos = pos + 1
    return v
end

-- The first pass, read-only: what the import adds to each counter it touches (the hash
-- fields; the top lists' and days' scores are doubles that do not overflow), and the first
-- line that adds to it. LIMIT is 2^63 - 2^20: a counter's value read as a Lua number is off
-- by at most 2^10 from the integer Redis holds, the import's sum (at most 10^4 lines of
-- 10^12, under 2^54) by at most 10^4: a sum found below LIMIT is below 2^63.
local LIMIT = 2 ^ 63 - 2 ^ 20
local adds, first_line, site_kp = {}, {}, nil

local function plan(key, field, n, line)
    local k = key .. '\0' .. field
    if not adds[k] then
        adds[k] = {key, field, 0}
        first_line[k] = line
    end
    adds[k][3] = adds[k][3] + tonumber(n)
end

local function day_ttl(daynum)
    if daynum == '' then
        return 0
    end
    return tonumber(daynum) * 86400 + DAY_TTL - now
end

do
    local line = 0
    while pos <= #ARGV do
        line = line + 1
        local tag, id, daynum = take(), take(), take()
        local counts = {views = take(), comments = take(), shares = take()}
        local nshares = tonumber(take())
        local kp = P .. '{' .. tag .. '}'
        site_kp = site_kp or kp
        for _ = 1, nshares do
            local network, n = take(), take()
            plan(kp .. 'a:' .. id, 'share:' .. network, n, line)
        end
        for metric, n in pairs(counts) do
            if n ~= '0' then
                plan(kp .. 'a:' .. id, metric, n, line)
                plan(site_kp .. 's:all', metric, n, line)
                if day_ttl(daynum) > 0 then
                    plan(site_kp .. 's:' .. ymd(tonumber(daynum)), metric, n, line)
                end
            end
        end
    end
    local worst
    for k, a in pairs(adds) do
        local v = tonumber(redis.call('HGET', a[1], a[2]) or '0')
        if v + a[3] >= LIMIT and (worst == nil or first_line[k] < worst) then
            worst = first_line[k]
        end
    end
    if worst then
        return {'limit', worst}
    end
end
pos = FIRST

-- The record first: a Redis user not allowed the list commands (an ACL from before imports)
-- is refused here, before anything is counted.
redis.call('LPUSH', P .. '{import}l', record)
redis.call('LTRIM', P .. '{import}l', 0, keep - 1)

-- Site totals go into the first line's bucket (the readers add every bucket's share up),
-- added line by line by Redis (exact integers). Counts go to Redis as the strings they came
-- in: never as Lua numbers, which Redis might write as 1e+12.
local site_ttl = {}
local dated = {} -- the key prefixes of buckets a day's counts went to

local function add_site(day, metric, n)
    redis.call('HINCRBY', site_kp .. 's:' .. day, metric, n)
end

-- Add N (a count > 0, as text) to METRIC of article ID: its total, the all-time top list,
-- and with a day whose bucket has TTL > 0 seconds left, that day's bucket.
local function bump(kp, id, metric, n, day, ttl)
    redis.call('HINCRBY', kp .. 'a:' .. id, metric, n)
    redis.call('ZINCRBY', kp .. 't:' .. metric, n, id)
    add_site('all', metric, n)
    if ttl > 0 then
        local d = kp .. 'd:' .. metric .. ':' .. day
        redis.call('ZINCRBY', d, n, id)
        redis.call('EXPIRE', d, ttl, 'NX')
        add_site(day, metric, n)
        site_ttl[day] = ttl
        dated[kp] = true
    end
end

local lines = 0
while pos <= #ARGV do
    lines = lines + 1
    local tag, id, daynum = take(), take(), take()
    local views, comments, shares = take(), take(), take()
    local nshares = tonumber(take())
    local kp = P .. '{' .. tag .. '}'
    local day, ttl = '', day_ttl(daynum)
    if daynum ~= '' then
        day = ymd(tonumber(daynum))
    end
    for _ = 1, nshares do
        local network, n = take(), take()
        redis.call('HINCRBY', kp .. 'a:' .. id, 'share:' .. network, n)
    end
    for metric, n in pairs({views = views, comments = comments, shares = shares}) do
        if n ~= '0' then
            bump(kp, id, metric, n, day, ttl)
        end
    end
end

for day, ttl in pairs(site_ttl) do
    redis.call('EXPIRE', site_kp .. 's:' .. day, ttl, 'NX')
end
-- The week's and month's lists and totals kept for the buckets of a day's counts (kept.lua).
if next(site_ttl) then
    dated[site_kp] = true
end
for kp in pairs(dated) do
    kept_stale(kp)
end

redis.call('SET', KEYS[1], digest .. ' ' .. lines, 'EX', marker_ttl)
return {'ok', lines}
