-- kept.lua -- one bucket's part of a week's or month's top list or site totals, computed at
-- most once per TTL for every collector and every worker: the answer is kept in the bucket's
-- own slot, with the bucket's epoch (bumped by forget.lua and import.lua) it was computed
-- under, and answered again while the key lives and the epoch is the same. Every part expires
-- at the same moment, the next multiple of TTL of Redis's clock (Unix milliseconds), however
-- far apart they were computed: a worker keeps its merged answer until then, and every
-- collector computes the parts again after it.
--
-- Registered twice: as kept, which keeps what it computes, and as kept_ro (READ_ONLY, see
-- cmake/functions.cmake), which answers the same -- a part kept and valid, or one computed
-- now -- without keeping it. tallyd calls kept_ro where Redis refuses kept (it takes no writes:
-- a failed background save, min-replicas-to-write unmet, a replica), so a week's or month's
-- read answers then too, at the cost of computing it at each call.
--
-- KEYS[1]   the kept answer, P{bb}k:<metric>:<period>:<YYYYMMDD> for a top list,
--           P{bb}k:site:<period>:<YYYYMMDD> for the totals (the period's last day)
-- KEYS[2]   the bucket's epoch, P{bb}k:epoch
-- KEYS[3..] the period's days: sorted sets P{bb}d:<metric>:<day> for a top list, hashes
--           P{bb}s:<day> for the totals
-- ARGV      kind ttl [limit]
--           (kind: 'top' or 'site'; ttl: how long an answer is kept, milliseconds; limit: a
--           top list's length, rank.lua)
-- Returns {life, answer}: life, the milliseconds the answer stays kept still by Redis's clock
-- (until the next multiple of ttl; between 1 and ttl); answer, for a top list what rank()
-- returns, for the totals a flat {field, high, low, ...} where the field's sum over the days
-- is high * 10^9 + low (every partial sum stays exact in a Lua number; a bucket's share may
-- be negative).

local kind, ttl = ARGV[1], tonumber(ARGV[2])
local limit = tonumber(ARGV[3] or '0')
local epoch = redis.call('GET', KEYS[2]) or '0'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expire_at = (math.floor(now / ttl) + 1) * ttl

-- {epoch, limit, expires at (ms), answer}. The key expires with its answer; a clock that went
-- back makes the answer computed again.
local kept = redis.call('GET', KEYS[1])
if kept then
    local k = cmsgpack.unpack(kept)
    local life = k[3] - now
    if k[1] == epoch and k[2] == limit and life > 0 and life <= ttl then
        return {life, k[4]}
    end
end

local days = {}
for i = 3, #KEYS do
    days[#days + 1] = KEYS[i]
end

local answer
if kind == 'top' then
    answer = rank(days, limit)
else
    -- A count as Redis wrote it ("-12", "4660000000000000000"), added in two parts: its last
    -- nine digits and the rest.
    local fields, high, low = {}, {}, {}
    for _, key in ipairs(days) do
        local h = redis.call('HGETALL', key)
        for i = 1, #h, 2 do
            local f = h[i]
            local sign, digits = string.match(h[i + 1], '^(%-?)(%d+)$')
            if digits then
                local s = sign == '-' and -1 or 1
                if not high[f] then
                    fields[#fields + 1] = f
                    high[f], low[f] = 0, 0
                end
                low[f] = low[f] + s * tonumber(string.sub(digits, -9))
                if #digits > 9 then
                    high[f] = high[f] + s * tonumber(string.sub(digits, 1, -10))
                end
            end
        end
    end
    answer = {}
    for _, f in ipairs(fields) do
        answer[#answer + 1] = f
        answer[#answer + 1] = high[f]
        answer[#answer + 1] = low[f]
    end
end

if not READ_ONLY then
    redis.call('SET', KEYS[1], cmsgpack.pack({epoch, limit, expire_at, answer}), 'PXAT',
               string.format('%.0f', expire_at))
end
return {expire_at - now, answer}
