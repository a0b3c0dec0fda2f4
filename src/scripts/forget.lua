-- forget.lua -- removes every key and list entry of one article: its totals, distinct-visitor
-- estimates, hourly and daily buckets, top-list entries and recent-view memory, and takes
-- its share out of the site totals.
--
-- KEYS[1]  the article's totals hash (it routes the call to the article's slot)
-- ARGV     P tag id window now model [registry]
--          (now is the collector's clock, Unix seconds: writes file buckets by their
--          collector's clock, so the buckets are found from it, one day or hour either side
--          for collectors whose clocks differ a little; model is include/tally/model.h as
--          apply.lua takes it, see model.lua; registry: the journals' registry when the
--          collectors keep journals -- every journal is folded first, so that no count
--          acknowledged before the DELETE comes back after it; the collector folds what waits
--          in bounded steps first, drain.lua, so that this call folds only what they left
--          and what arrived since)
-- Returns 1 when the article had totals, else 0.
--
-- The write path keeps a unit's site totals in the first bucket it touches; the readers add
-- every bucket's share up, so the article's share comes out of its own bucket's day (a
-- negative share there), which then expires with the day as the write path's would.
--
-- A day or hour key that held only this article does not stay away: a collector that set its
-- expiry earlier would recreate it without one (the write script sets expiries only where the
-- collector says a key may be new). It comes back at once holding the member '' (no article
-- id is empty) at 0, which every reader skips, expiring with its day or hour.

local P, tag, id, window, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local kp = P .. '{' .. tag .. '}'
local model = model_of(ARGV[6])
local HOUR_TTL, DAY_TTL = model.hour_ttl, model.day_ttl
-- How far back buckets reach: their lifetimes, and one more for a clock a little ahead.
local DAYS, HOURS = DAY_TTL / 86400 + 1, HOUR_TTL / 3600 + 1
local METRICS, SUMMED = model.metrics, model.site -- SUMMED: kept in site totals

if ARGV[7] and ARGV[7] ~= '' then
    local c = counter_new(P, model, nil)
    fold_all(c, ARGV[7])
    counter_finish(c)
end

-- KEY, whose bucket began at START and lives TTL from then (at most TTL from now: a bucket
-- of the next day or hour begins after NOW), was just emptied.
local function keep_expiring(key, start, ttl, add, ...)
    if redis.call('EXISTS', key) == 0 then
        redis.call(add, key, ...)
        redis.call('EXPIRE', key, math.min(ttl, start + ttl - now))
    end
end

-- -N for N, an integer as Redis wrote it (HGET's digits): as text, never through a Lua
-- number, which is exact only to 2^53 and which Redis might be handed as -4.66e+17.
local function negated(n)
    if string.sub(n, 1, 1) == '-' then
        return string.sub(n, 2)
    end
    return '-' .. n
end

local function hour_of(t)
    return ymd(math.floor(t / 86400)) .. string.format('%02d', math.floor((t % 86400) / 3600))
end

local today = math.floor(now / 86400)

for _, m in ipairs(METRICS) do
    for d = -1, DAYS - 1 do
        local day = ymd(today - d)
        local key = kp .. 'd:' .. m .. ':' .. day
        local score = redis.call('ZSCORE', key, id)
        if score then
            redis.call('ZREM', key, id)
            keep_expiring(key, (today - d) * 86400, DAY_TTL, 'ZADD', 0, '')
            if SUMMED[m] then
                local site = kp .. 's:' .. day
                -- A score is a double, written by Redis as 4.66e+17 from 2^52 up: formatted as the
                -- integer it holds (the write and import paths add integers only).
                redis.call('HINCRBY', site, m, string.format('%d', -tonumber(score)))
                redis.call('EXPIRE', site, math.min(DAY_TTL, (today - d) * 86400 + DAY_TTL - now),
                           'NX')
            end
        end
    end
    for h = -1, HOURS - 1 do
        local t = now - 3600 * h
        local key = kp .. 'h:' .. m .. ':' .. hour_of(t)
        if redis.call('HDEL', key, id) == 1 then
            keep_expiring(key, t - t % 3600, HOUR_TTL, 'HSET', '', 0)
        end
    end
    redis.call('ZREM', kp .. 't:' .. m, id)
end

-- The week's and month's lists and totals kept for the bucket held the article.
kept_stale(kp)

local totals = KEYS[1]
local had = redis.call('EXISTS', totals)
for m in pairs(SUMMED) do
    local n = redis.call('HGET', totals, m)
    if n and n ~= '0' then
        redis.call('HINCRBY', kp .. 's:all', m, negated(n))
    end
end
redis.call('DEL', totals, kp .. 'v:' .. ymd(today + 1) .. ':' .. id,
           kp .. 'v:' .. ymd(today) .. ':' .. id, kp .. 'v:' .. ymd(today - 1) .. ':' .. id)
if window > 0 then
    local slot = math.floor(now / window)
    redis.call('DEL', kp .. 'w:' .. id .. ':' .. (slot + 1), kp .. 'w:' .. id .. ':' .. slot,
               kp .. 'w:' .. id .. ':' .. (slot - 1))
end
return had
