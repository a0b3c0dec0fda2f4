-- apply.lua -- applies one write unit atomically: every counter of every event in it (totals,
-- hourly and daily buckets, top lists, distinct visitors), the repeat-view checks and the
-- idempotency markers.
--
-- KEYS[1]  the unit's attempt marker. It holds this script's answer once applied, so a unit
--          sent again after a lost connection is answered as the first time and counted
--          once.
-- KEYS[2..] in Redis Cluster, every other key the unit touches (all in one slot), so that a
--          migrating slot is refused before anything runs; unused by the script itself.
-- ARGV     P window marker_ttl idem_ttl now fence fresh model segment... (segments run to the last
--          argument; now is the collector's clock, Unix seconds: days and hours are UTC;
--          fence is a time on Redis's clock, Unix ms, 15 digits: past it the unit is refused
--          and its marker says so, so that no copy of it sent earlier runs later either;
--          fresh lists the bucket keys of this day or hour that may be new and need their
--          expiry set, as "<tag><kind><mask>": kind d (day) or h (hour), mask two hex digits
--          of the model's bits -- the collector remembers the others; model is
--          include/tally/model.h as tally_model_arg() writes it (see model.lua): the
--          lifetimes of hour, day and distinct-visitor keys, then the name of each bit from
--          bit 0 up, "site" for the site totals' day key: "777600 34992000 172800 views+
--          visitors shares+ ...")
--   segment: idem_key digest accepted bot prefetch narticles article...
--            (idem_key "" when the requests had no Idempotency-Key, else its marker, which
--            holds "<digest> accepted,bot,prefetch,repeat" once applied; digest names the
--            request's body (16 hex digits); accepted counts the events before repeat checks)
--   article: tag id plain_views nvisitors visitor... nshares (network count)...
--            ncomments delta... nsums (metric n)... nprops (field value)...
--            (tag is the bucket's two hex digits; with a window > 0 each visitor entry is a
--            view to check for a repeat, else the views are in plain_views and the visitors
--            only feed the distinct-visitor estimates; each sum is a metric of rule SUM,
--            added to the totals and to the hour's, the day's and the all-time lists under
--            its name, each prop a property set in the totals)
-- Returns {"fenced"} when refused past the fence (now or for an earlier copy), else
-- {"ok", expired, seg...}: expired lists, in the form of fresh, the
-- keys whose expiry this unit set (the collector then knows them); each seg is
--   {first, accepted, bot, prefetch, repeat, repeat_index...}
-- where first is 1 when applied now, 0 when an earlier answer is repeated, 2 when the marker
-- holds another body's digest (nothing applied; the rest is zeros), and each
-- repeat_index is the 1-based position of a repeated view among the segment's visitors.
-- All values were validated by the collector: nothing below can fail half-way.
--
-- Keys of one article share its tag's slot: P{tag}kind:... (see include/tally/keys.h).

local marker = redis.call('GET', KEYS[1])
if marker then
    return cjson.decode(marker)
end

-- Past its fence the collector has answered (or is about to answer) the unit's requests
-- without knowing: it must not run now, nor later from a copy still queued.
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[6]) then
    local fenced = {'fenced'}
    redis.call('SET', KEYS[1], cjson.encode(fenced), 'EX', tonumber(ARGV[3]))
    return fenced
end

local P = ARGV[1]
local window = tonumber(ARGV[2])
local marker_ttl = tonumber(ARGV[3])
local idem_ttl = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local fresh = {}
for i = 1, #ARGV[7], 5 do
    fresh[string.sub(ARGV[7], i, i + 2)] = tonumber(string.sub(ARGV[7], i + 3, i + 4), 16)
end
local model = model_of(ARGV[8])
local HOUR_TTL = model.hour_ttl        -- hourly buckets
local DAY_TTL = model.day_ttl          -- daily buckets and site totals
local HLL_DAY_TTL = model.visitors_ttl -- a day's distinct-visitor estimate
-- The bit of each metric (and of the site totals) in fresh and in the answer; SITE: the
-- metrics also summed in the site totals.
local BIT, SITE = model.bit, model.site
local pos = 9

local DAY = ymd(math.floor(now / 86400))
local HOUR = DAY .. string.format('%02d', math.floor((now % 86400) / 3600))

local function take()
    local v = ARGV[pos]
    pos = pos + 1
    return v
end

local function expire(key, ttl)
    redis.call('EXPIRE', key, ttl, 'NX')
end

-- Expire a bucket's day or hour key of METRIC once, if the collector said it may be new, and
-- note it in DONE (per "<tag><kind>": the metric bits) for the answer.
local done = {}
local function expire_fresh(tag, kind, metric, key, ttl)
    local t = tag .. kind
    local b = BIT[metric]
    if bit.band(fresh[t] or 0, b) ~= 0 and bit.band(done[t] or 0, b) == 0 then
        done[t] = bit.bor(done[t] or 0, b)
        expire(key, ttl)
    end
end

-- Site totals: summed over the unit and written once, into the first bucket it touches (the
-- readers add every bucket's share up).
local site, site_kp, site_tag = {}, nil, nil

-- Add N to METRIC of article ID in this hour's and day's buckets and the all-time top list,
-- and to the site totals if the model keeps it there.
local function bump(tag, kp, metric, id, n)
    if n == 0 then
        return
    end
    if SITE[metric] then
        if not site_kp then
            site_kp, site_tag = kp, tag
        end
        site[metric] = (site[metric] or 0) + n
    end
    local d = kp .. 'd:' .. metric .. ':' .. DAY
    local h = kp .. 'h:' .. metric .. ':' .. HOUR
    redis.call('ZINCRBY', d, n, id)
    expire_fresh(tag, 'd', metric, d, DAY_TTL)
    redis.call('HINCRBY', h, id, n)
    expire_fresh(tag, 'h', metric, h, HOUR_TTL)
    redis.call('ZINCRBY', kp .. 't:' .. metric, n, id)
end

local function pfadd(key, list)
    local changed = 0
    for i = 1, #list, 1000 do
        changed = changed + redis.call('PFADD', key, unpack(list, i, math.min(i + 999, #list)))
    end
    return changed > 0
end

-- Distinct visitors. One HyperLogLog per article and day estimates the day's distinct
-- visitors (ids are salted per day, so a visitor on two days is two visitors, as the contract
-- says). When the estimate grows, the growth is added to the hour (the day's new visitors in
-- that hour: an hour's values add up to the day's), to the all-time total and top list. A
-- view by a visitor already counted today costs one PFADD.
local function visitors(tag, kp, totals, id, list)
    local vd = kp .. 'v:' .. DAY .. ':' .. id
    if not pfadd(vd, list) then
        return
    end
    expire(vd, HLL_DAY_TTL)
    local d = kp .. 'd:visitors:' .. DAY
    local now_count = redis.call('PFCOUNT', vd)
    local grown = now_count - tonumber(redis.call('ZSCORE', d, id) or '0')
    if grown <= 0 then
        return
    end
    redis.call('ZADD', d, now_count, id)
    expire_fresh(tag, 'd', 'visitors', d, DAY_TTL)
    local h = kp .. 'h:visitors:' .. HOUR
    redis.call('HINCRBY', h, id, grown)
    expire_fresh(tag, 'h', 'visitors', h, HOUR_TTL)
    redis.call('HINCRBY', totals, 'visitors', grown)
    redis.call('ZINCRBY', kp .. 't:visitors', grown, id)
end

-- Is V's view of the article a repeat within the window? Views are remembered in hashes
-- per window-long slot; the current and the previous slot cover every view within a window.
local function is_repeat(kp, id, v)
    local slot = math.floor(now / window)
    local cur = kp .. 'w:' .. id .. ':' .. slot
    local seen = redis.call('HGET', cur, v) or redis.call('HGET', kp .. 'w:' .. id .. ':' .. (slot - 1), v)
    if seen and now - tonumber(seen) < window then
        return true
    end
    if redis.call('HSET', cur, v, now) == 1 then
        expire(cur, 2 * window)
    end
    return false
end

-- Applies one article's record; returns the repeats found, appending their positions to REP
-- (numbered from BASE + 1), and the number of visitor entries.
local function apply_article(rep, base)
    local tag = take()
    local id = take()
    local kp = P .. '{' .. tag .. '}'
    local totals = kp .. 'a:' .. id
    local views = tonumber(take())
    local nvis = tonumber(take())
    local list = {}
    local repeats = 0
    for i = 1, nvis do
        local v = take()
        list[i] = v
        if window > 0 then
            if is_repeat(kp, id, v) then
                repeats = repeats + 1
                rep[#rep + 1] = base + i
            else
                views = views + 1
            end
        end
    end
    if views > 0 then
        redis.call('HINCRBY', totals, 'views', views)
        bump(tag, kp, 'views', id, views)
    end
    if nvis > 0 then
        visitors(tag, kp, totals, id, list)
    end
    local nshares = tonumber(take())
    local shares = 0
    for _ = 1, nshares do
        local network = take()
        local n = tonumber(take())
        shares = shares + n
        redis.call('HINCRBY', totals, 'share:' .. network, n)
    end
    if shares > 0 then
        redis.call('HINCRBY', totals, 'shares', shares)
        bump(tag, kp, 'shares', id, shares)
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
            bump(tag, kp, 'comments', id, cur - start)
        end
    end
    for _ = 1, tonumber(take()) do
        local metric = take()
        local n = tonumber(take())
        redis.call('HINCRBY', totals, metric, n)
        bump(tag, kp, metric, id, n)
    end
    for _ = 1, tonumber(take()) do
        local field = take()
        redis.call('HSET', totals, field, take())
    end
    return repeats, nvis
end

local function skip_segment_articles(n)
    for _ = 1, n do
        pos = pos + 3 -- tag, id, plain_views
        pos = pos + 1 + tonumber(ARGV[pos]) -- visitors
        pos = pos + 1 + 2 * tonumber(ARGV[pos]) -- shares
        pos = pos + 1 + tonumber(ARGV[pos]) -- comments
        pos = pos + 1 + 2 * tonumber(ARGV[pos]) -- sums
        pos = pos + 1 + 2 * tonumber(ARGV[pos]) -- props
    end
end

local result = {'ok', ''}
local s = 1
while pos <= #ARGV do
    s = s + 1
    local idem = take()
    local digest = take()
    local accepted = tonumber(take())
    local bot = tonumber(take())
    local prefetch = tonumber(take())
    local narticles = tonumber(take())
    local prev = idem ~= '' and redis.call('GET', idem)
    local prev_digest, prev_answer
    if prev then
        prev_digest, prev_answer = string.match(prev, '^(%x+) ([%d,]+)$')
        if not prev_digest then
            if string.find(prev, '^%d+,%d+,%d+,%d+$') then
                prev_answer = prev -- written before digests were kept: the answer alone
            else
                prev_digest = prev -- a digest alone: this body's write is under way
            end
        end
    end
    if prev_digest and prev_digest ~= digest then
        result[s + 1] = {2, 0, 0, 0, 0}
        skip_segment_articles(narticles)
    elseif prev_answer then
        local seg = {0}
        for n in string.gmatch(prev_answer, '%d+') do
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
            redis.call('SET', idem,
                       digest .. ' ' .. accepted .. ',' .. bot .. ',' .. prefetch .. ',' .. repeats,
                       'EX', idem_ttl)
        end
        local seg = {1, accepted, bot, prefetch, repeats}
        for i = 1, #rep do
            seg[#seg + 1] = rep[i]
        end
        result[s + 1] = seg
    end
end

if site_kp then
    local day = site_kp .. 's:' .. DAY
    for metric, n in pairs(site) do
        redis.call('HINCRBY', day, metric, n)
        redis.call('HINCRBY', site_kp .. 's:all', metric, n)
    end
    expire_fresh(site_tag, 'd', 'site', day, DAY_TTL)
end

local expired = {}
for t, m in pairs(done) do
    expired[#expired + 1] = t .. string.format('%02x', m)
end
result[2] = table.concat(expired)

redis.call('SET', KEYS[1], cjson.encode(result), 'EX', marker_ttl)
return result
