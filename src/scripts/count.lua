-- count.lua -- put before the scripts that count (cmake/functions.cmake puts it before every
-- function body): an article record's counts into its totals, hourly and daily buckets, top
-- lists, distinct-visitor estimates and the site totals. apply.lua counts a unit's records at
-- once; fold.lua first merges many journal entries' records, then counts each merged one.
--
-- A record, as the collector writes it (one argument per token):
--   tag id views nvisitors visitor... nshares (network count)... ncomments delta...
--   nsums (metric n)... nprops (field value)...
-- (tag is the bucket's two hex digits; views are the views to count; the visitors feed the
-- distinct-visitor estimate -- in a unit with a repeat window each visitor is also a view to
-- check, see unit.lua; each sum is a metric of rule SUM, each prop a property set in the
-- totals.) read_record() turns one into {tag, id, views, vis = {...}, shares = {network =
-- n}, nets = {network...}, comments = {delta...}, sums = {metric = n}, mets = {metric...},
-- props = {field = value}, fields = {field...}}.

-- What a record without visitors, shares, comments, sums or props holds in their place: one
-- table, never written (merge_record() gives a record its own before adding to it). Most
-- records are one view: this spares building eight tables for each.
local EMPTY = {}

-- Read the count N at T[pos] and the N values after it (each through CONV, if given).
-- Returns them as a list (EMPTY when N is 0) and the position after them.
local function read_list(t, pos, conv)
    local n = tonumber(t[pos])
    if n == 0 then
        return EMPTY, pos + 1
    end
    local list = {}
    for i = 1, n do
        list[i] = conv and conv(t[pos + i]) or t[pos + i]
    end
    return list, pos + n + 1
end

-- Read the count N at T[pos] and N pairs (name value) after it. Returns MAP (name -> value:
-- values added up, or with ADD false the last one kept), ORDER (names, first seen first) --
-- both EMPTY when N is 0 -- and the position after them.
local function read_pairs(t, pos, add)
    local n = tonumber(t[pos])
    if n == 0 then
        return EMPTY, EMPTY, pos + 1
    end
    local map, order = {}, {}
    for i = 1, n do
        local k, v = t[pos + 2 * i - 1], t[pos + 2 * i]
        if map[k] == nil then
            order[#order + 1] = k
        end
        if add then
            map[k] = (map[k] or 0) + tonumber(v)
        else
            map[k] = v
        end
    end
    return map, order, pos + 2 * n + 1
end

-- The record at T[pos]; returns it and the position after it.
local function read_record(t, pos)
    local r = {tag = t[pos], id = t[pos + 1], views = tonumber(t[pos + 2])}
    r.vis, pos = read_list(t, pos + 3)
    r.shares, r.nets, pos = read_pairs(t, pos, true)
    r.comments, pos = read_list(t, pos, tonumber)
    r.sums, r.mets, pos = read_pairs(t, pos, true)
    r.props, r.fields, pos = read_pairs(t, pos, false)
    return r, pos
end

-- The position after the record at T[pos], without reading it.
local function skip_record(t, pos)
    pos = pos + 3
    pos = pos + 1 + tonumber(t[pos])     -- visitors
    pos = pos + 1 + 2 * tonumber(t[pos]) -- shares
    pos = pos + 1 + tonumber(t[pos])     -- comments
    pos = pos + 1 + 2 * tonumber(t[pos]) -- sums
    return pos + 1 + 2 * tonumber(t[pos]) -- props
end

-- Put B's pairs (MAP_B, ORDER_B) into A's: values added up, or with ADD false B's kept.
local function merge_pairs(map_a, order_a, map_b, order_b, add)
    for _, k in ipairs(order_b) do
        if map_a[k] == nil then
            order_a[#order_a + 1] = k
        end
        map_a[k] = add and (map_a[k] or 0) + map_b[k] or map_b[k]
    end
end

-- Add record B (later) into record A: what one fold counts once for both.
local function merge_record(a, b)
    a.views = a.views + b.views
    if a.vis == EMPTY and #b.vis > 0 then
        a.vis = {}
    end
    if a.nets == EMPTY and #b.nets > 0 then
        a.shares, a.nets = {}, {}
    end
    if a.comments == EMPTY and #b.comments > 0 then
        a.comments = {}
    end
    if a.mets == EMPTY and #b.mets > 0 then
        a.sums, a.mets = {}, {}
    end
    if a.fields == EMPTY and #b.fields > 0 then
        a.props, a.fields = {}, {}
    end
    for _, v in ipairs(b.vis) do
        a.vis[#a.vis + 1] = v
    end
    merge_pairs(a.shares, a.nets, b.shares, b.nets, true)
    for _, d in ipairs(b.comments) do -- in order: a count never goes below 0 at any step
        a.comments[#a.comments + 1] = d
    end
    merge_pairs(a.sums, a.mets, b.sums, b.mets, true)
    merge_pairs(a.props, a.fields, b.props, b.fields, false) -- the latest value wins
end

-- A counter for one call. MODEL as model_of() gives it; FRESH: nil to set the expiry of
-- every day or hour key once per call (a fold, whose hours are many), else the collector's
-- list of bucket keys that may be new, "<tag><kind><mask>..." (see apply.lua).
--
-- A unit counted at once (apply.lua) stops at a command Redis refuses (a key of another type,
-- written by someone else): the collector answers its requests as of unknown outcome. A fold
-- (FRESH nil) must not stop half-way -- what it counted before would be counted again by the
-- next fold of the same entries --, so it skips such a command, goes on, and counts it in
-- c.errors (c.error: the last message).
local function counter_new(P, model, fresh)
    local c = {P = P, model = model, done = {}, site = {}, site_days = {}, touched = {},
               tags = {}, errors = 0, call = redis.call}
    if not fresh then
        c.call = function(...)
            local r = redis.pcall(...)
            if type(r) == 'table' and r.err then
                c.errors = c.errors + 1
                c.error = r.err
                return nil
            end
            return r
        end
    end
    if fresh then
        c.fresh = {}
        for i = 1, #fresh, 5 do
            c.fresh[string.sub(fresh, i, i + 2)] = tonumber(string.sub(fresh, i + 3, i + 4), 16)
        end
    end
    return c
end

local function expire(c, key, ttl)
    c.call('EXPIRE', key, ttl, 'NX')
end

-- Set the expiry of KEY, the day or hour key of METRIC in bucket TAG (KIND d or h), once per
-- call: with the collector's list, only where it says the key may be new, noting it in
-- c.done (per "<tag><kind>": the metric bits) for the answer.
local function expire_fresh(c, tag, kind, metric, key, ttl)
    if not c.fresh then
        if not c.done[key] then
            c.done[key] = true
            expire(c, key, ttl)
        end
        return
    end
    local t = tag .. kind
    local b = c.model.bit[metric]
    if bit.band(c.fresh[t] or 0, b) ~= 0 and bit.band(c.done[t] or 0, b) == 0 then
        c.done[t] = bit.bor(c.done[t] or 0, b)
        expire(c, key, ttl)
    end
end

-- Add N to METRIC of article ID in the hour's and day's buckets and the all-time top list,
-- and to the day's site totals if the model keeps it there. Site totals are summed over the
-- call and written once per day, into the first bucket seen (readers add every bucket up).
local function bump(c, tag, kp, metric, id, n, day, hour)
    if n == 0 then
        return
    end
    if c.model.site[metric] then
        local s = c.site[day]
        if not s then
            s = {kp = kp, tag = tag, n = {}, names = {}}
            c.site[day] = s
            c.site_days[#c.site_days + 1] = day
        end
        if not s.n[metric] then
            s.names[#s.names + 1] = metric
        end
        s.n[metric] = (s.n[metric] or 0) + n
    end
    local d = kp .. 'd:' .. metric .. ':' .. day
    local h = kp .. 'h:' .. metric .. ':' .. hour
    c.call('ZINCRBY', d, n, id)
    expire_fresh(c, tag, 'd', metric, d, c.model.day_ttl)
    c.call('HINCRBY', h, id, n)
    expire_fresh(c, tag, 'h', metric, h, c.model.hour_ttl)
    c.call('ZINCRBY', kp .. 't:' .. metric, n, id)
end

local function pfadd(c, key, list)
    local changed = 0
    for i = 1, #list, 1000 do
        changed = changed + (c.call('PFADD', key, unpack(list, i, math.min(i + 999, #list))) or 0)
    end
    return changed > 0
end

-- Distinct visitors. One HyperLogLog per article and day estimates the day's distinct
-- visitors (ids are salted per day, so a visitor on two days is two visitors, as the contract
-- says). When the estimate grows, the growth is added to the hour (the day's new visitors in
-- that hour: an hour's values add up to the day's), to the all-time total and top list. A
-- view by a visitor already counted today costs one PFADD.
local function visitors(c, tag, kp, totals, id, list, day, hour)
    local vd = kp .. 'v:' .. day .. ':' .. id
    if not pfadd(c, vd, list) then
        return
    end
    expire(c, vd, c.model.visitors_ttl)
    local d = kp .. 'd:visitors:' .. day
    local now_count = c.call('PFCOUNT', vd)
    local grown = (now_count or 0) - (tonumber(c.call('ZSCORE', d, id) or '0') or 0)
    if grown <= 0 then
        return
    end
    c.call('ZADD', d, now_count, id)
    expire_fresh(c, tag, 'd', 'visitors', d, c.model.day_ttl)
    local h = kp .. 'h:visitors:' .. hour
    c.call('HINCRBY', h, id, grown)
    expire_fresh(c, tag, 'h', 'visitors', h, c.model.hour_ttl)
    c.call('HINCRBY', totals, 'visitors', grown)
    c.call('ZINCRBY', kp .. 't:visitors', grown, id)
end

-- Count record R filed under DAY ("YYYYMMDD") and HOUR ("YYYYMMDDHH").
local function count_record(c, r, day, hour)
    local tag, id = r.tag, r.id
    local kp = c.P .. '{' .. tag .. '}'
    local totals = kp .. 'a:' .. id
    if not c.touched[tag] then
        c.touched[tag] = true
        c.tags[#c.tags + 1] = tag
    end
    if r.views > 0 then
        c.call('HINCRBY', totals, 'views', r.views)
        bump(c, tag, kp, 'views', id, r.views, day, hour)
    end
    if #r.vis > 0 then
        visitors(c, tag, kp, totals, id, r.vis, day, hour)
    end
    local shares = 0
    for _, net in ipairs(r.nets) do
        local n = r.shares[net]
        shares = shares + n
        c.call('HINCRBY', totals, 'share:' .. net, n)
    end
    if shares > 0 then
        c.call('HINCRBY', totals, 'shares', shares)
        bump(c, tag, kp, 'shares', id, shares, day, hour)
    end
    if #r.comments > 0 then
        -- A comment count never goes below 0: fold the deltas in order, flooring each step.
        local start = tonumber(c.call('HGET', totals, 'comments') or '0') or 0
        local cur = start
        for _, d in ipairs(r.comments) do
            cur = cur + d
            if cur < 0 then
                cur = 0
            end
        end
        if cur ~= start then
            c.call('HSET', totals, 'comments', cur)
            bump(c, tag, kp, 'comments', id, cur - start, day, hour)
        end
    end
    for _, m in ipairs(r.mets) do
        c.call('HINCRBY', totals, m, r.sums[m])
        bump(c, tag, kp, m, id, r.sums[m], day, hour)
    end
    for _, f in ipairs(r.fields) do
        c.call('HSET', totals, f, r.props[f])
    end
end

-- Write the call's site totals. Returns the keys whose expiry the call set, in the form of
-- the collector's fresh list (empty without one), and the buckets it touched ("0a3f...").
local function counter_finish(c)
    for _, day in ipairs(c.site_days) do
        local s = c.site[day]
        local key = s.kp .. 's:' .. day
        for _, metric in ipairs(s.names) do
            c.call('HINCRBY', key, metric, s.n[metric])
            c.call('HINCRBY', s.kp .. 's:all', metric, s.n[metric])
        end
        expire_fresh(c, s.tag, 'd', 'site', key, c.model.day_ttl)
    end
    local expired = {}
    if c.fresh then
        for t, m in pairs(c.done) do
            expired[#expired + 1] = t .. string.format('%02x', m)
        end
    end
    return table.concat(expired), table.concat(c.tags)
end

-- The day and hour keys of Unix time NOW (seconds): "YYYYMMDD", "YYYYMMDDHH".
local function day_hour(now)
    local day = ymd(math.floor(now / 86400))
    return day, day .. string.format('%02d', math.floor((now % 86400) / 3600))
end
