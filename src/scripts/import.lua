-- import.lua -- applies one import (POST /v1/import) at once: every line's counts, the
-- import's record in the list GET /v1/imports reads, and its Idempotency-Key marker; or, when
-- the marker is there already, nothing.
--
-- KEYS[1]  the import's marker, P{import}m:<Idempotency-Key>: "<digest> <lines>" once applied
-- ARGV     P digest marker_ttl record keep now line...
--          (digest names the body, 16 hex digits; record is the JSON the list keeps, newest
--          first, at most keep of them; now is the collector's clock, Unix seconds)
--   line:  tag id day views comments shares nshares (network count)...
--          (day is a day number, days since 1970-01-01, or "" for the all-time totals only;
--          counts are non-negative integers, shares the sum of the nshares pairs that
--          follow, each count > 0)
-- Returns {"ok", lines} when applied now, {"replay", lines} when this body was applied
-- before under the key, {"reused", 0} when another body holds the key (nothing applied).
-- All values were validated by the collector: nothing below can fail half-way.
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

local DAY_TTL = 405 * 86400 -- the daily buckets' lifetime (apply.lua)
local marker_ttl = tonumber(ARGV[3])
local record = ARGV[4]
local keep = tonumber(ARGV[5])
local now = tonumber(ARGV[6])
local pos = 7

-- The record first: a Redis user not allowed the list commands (an ACL from before imports)
-- is refused here, before anything is counted.
redis.call('LPUSH', P .. '{import}l', record)
redis.call('LTRIM', P .. '{import}l', 0, keep - 1)

local function take()
    local v = ARGV[pos]
    pos = pos + 1
    return v
end

-- Site totals, summed per day ('all' for all time) and written once, into the first line's
-- bucket (the readers add every bucket's share up). Counts go to Redis as the strings they
-- came in, or formatted as integers: never as Lua numbers, which Redis might write as 1e+12.
local site, site_ttl, site_kp = {}, {}, nil

local function add_site(day, metric, n)
    site[day] = site[day] or {}
    site[day][metric] = (site[day][metric] or 0) + tonumber(n)
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
    end
end

local lines = 0
while pos <= #ARGV do
    lines = lines + 1
    local tag, id, daynum = take(), take(), take()
    local views, comments, shares = take(), take(), take()
    local nshares = tonumber(take())
    local kp = P .. '{' .. tag .. '}'
    local day, ttl = '', 0
    if daynum ~= '' then
        day = ymd(tonumber(daynum))
        ttl = tonumber(daynum) * 86400 + DAY_TTL - now
    end
    site_kp = site_kp or kp
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

for day, metrics in pairs(site) do
    local key = site_kp .. 's:' .. day
    for metric, n in pairs(metrics) do
        redis.call('HINCRBY', key, metric, string.format('%d', n))
    end
    if site_ttl[day] then
        redis.call('EXPIRE', key, site_ttl[day], 'NX')
    end
end

redis.call('SET', KEYS[1], digest .. ' ' .. lines, 'EX', marker_ttl)
return {'ok', lines}
