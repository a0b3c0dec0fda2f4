-- apply.lua -- applies one write unit atomically: every counter of every event in it, the
-- repeat-view checks and the idempotency markers, or (fenced) nothing at all.
--
-- KEYS[1]  the unit's attempt marker. It holds this script's answer once applied, so a unit
--          sent again after a lost connection is answered as the first time and counted
--          once; the collector sets it to "aborted" to fence a unit it gave up on.
-- ARGV     P window marker_ttl idem_ttl segment... (segments run to the last argument)
--   segment: idem_key accepted bot prefetch narticles article...
--            (idem_key "" when the requests had no Idempotency-Key; accepted counts the
--            events before repeat checks)
--   article: tag id plain_views nvisitors visitor... nshares (network count)...
--            ncomments delta...
--            (tag is the bucket's two hex digits; with a window > 0 each visitor entry is a
--            view to check for a repeat, else the views are in plain_views and the visitors
--            only feed the HyperLogLog)
-- Returns {"ok", seg...} or {"fenced"}; each seg is
--   {first, accepted, bot, prefetch, repeat, repeat_index...}
-- where first is 1 when applied now, 0 when an earlier answer is repeated, and each
-- repeat_index is the 1-based position of a repeated view among the segment's visitors.
-- All values were validated by the collector: nothing below can fail half-way.

local marker = redis.call('GET', KEYS[1])
if marker then
    if marker == 'aborted' then
        return {'fenced'}
    end
    return cjson.decode(marker)
end

local P = ARGV[1]
local window = tonumber(ARGV[2])
local marker_ttl = tonumber(ARGV[3])
local idem_ttl = tonumber(ARGV[4])
local pos = 5

local function take()
    local v = ARGV[pos]
    pos = pos + 1
    return v
end

local function pfadd(key, list)
    for i = 1, #list, 1000 do
        redis.call('PFADD', key, unpack(list, i, math.min(i + 999, #list)))
    end
end

-- Applies one article's record; returns the repeats found, appending their positions to REP
-- (numbered from BASE + 1).
local function apply_article(rep, base)
    local tag = take()
    local id = take()
    local kp = P .. '{' .. tag .. '}'
    local totals = kp .. 'a:' .. id
    local views = tonumber(take())
    local nvis = tonumber(take())
    local visitors = {}
    local repeats = 0
    for i = 1, nvis do
        local v = take()
        visitors[i] = v
        if window > 0 then
            if redis.call('SET', kp .. 'w:' .. v .. ':' .. id, '1', 'NX', 'EX', window) then
                views = views + 1
            else
                repeats = repeats + 1
                rep[#rep + 1] = base + i
            end
        end
    end
    if views > 0 then
        redis.call('HINCRBY', totals, 'views', views)
    end
    if nvis > 0 then
        pfadd(kp .. 'u:' .. id, visitors)
    end
    local nshares = tonumber(take())
    for _ = 1, nshares do
        local network = take()
        local n = tonumber(take())
        redis.call('HINCRBY', totals, 'shares', n)
        redis.call('HINCRBY', totals, 'share:' .. network, n)
    end
    local ncomments = tonumber(take())
    if ncomments > 0 then
        -- A comment count never goes below 0: fold the deltas in order, flooring each step.
        local start = tonumber(redis.call('HGET', totals, 'comments') or '0')
        local cur = start
        for _ = 1, ncomments do
            cur = cur + tonumber(take())
            if cur < 0 then
                cur = 0
            end
        end
        if cur ~= start then
            redis.call('HSET', totals, 'comments', cur)
        end
    end
    return repeats, nvis
end

local function skip_segment_articles(n)
    for _ = 1, n do
        pos = pos + 3 -- tag, id, plain_views
        pos = pos + 1 + tonumber(ARGV[pos]) -- visitors
        pos = pos + 1 + 2 * tonumber(ARGV[pos]) -- shares
        pos = pos + 1 + tonumber(ARGV[pos]) -- comments
    end
end

local result = {'ok'}
local s = 0
while pos <= #ARGV do
    s = s + 1
    local idem = take()
    local accepted = tonumber(take())
    local bot = tonumber(take())
    local prefetch = tonumber(take())
    local narticles = tonumber(take())
    local prev = idem ~= '' and redis.call('GET', idem)
    if prev then
        local seg = {0}
        for n in string.gmatch(prev, '%d+') do
            seg[#seg + 1] = tonumber(n)
        end
        result[s + 1] = seg
        skip_segment_articles(narticles)
    else
        local rep, repeats, seen = {}, 0, 0
        for _ = 1, narticles do
            local r, nvis = apply_article(rep, seen)
            repeats = repeats + r
            seen = seen + nvis
        end
        accepted = accepted - repeats
        if idem ~= '' then
            redis.call('SET', idem, accepted .. ',' .. bot .. ',' .. prefetch .. ',' .. repeats,
                       'EX', idem_ttl)
        end
        local seg = {1, accepted, bot, prefetch, repeats}
        for i = 1, #rep do
            seg[#seg + 1] = rep[i]
        end
        result[s + 1] = seg
    end
end

redis.call('SET', KEYS[1], cjson.encode(result), 'EX', marker_ttl)
return result
