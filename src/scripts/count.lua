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

-- Counts go to Redis as strings: a number passed to redis.call is formatted by Redis with
-- "%.17g", which costs more than the command it feeds (HINCRBY by 1). INTS keeps the text of
-- the small integers once made, for as long as the function library is loaded.
local INTS = {}

-- The text of the integer N, as Redis reads an integer ("-3", "12").
local function int(n)
    local s = INTS[n]
    if s then
        return s
    end
    s = string.format('%d', n)
    if n >= -4096 and n <= 4096 then
        INTS[n] = s
    end
    return s
end

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

-- The record at T[pos]; returns it and the position after it. The table is built with every
-- field at once (sized once, where one grown field by field is rehashed three times), and an
-- empty list or pair list ("0") is skipped without a call. With R, the record is read into R
-- instead (a caller that counts each record before it reads the next spares a table per
-- record).
local function read_record(t, pos, r)
    if r then
        r.tag, r.id, r.views, r.vis, r.shares, r.nets, r.comments, r.sums, r.mets, r.props,
            r.fields = t[pos], t[pos + 1], tonumber(t[pos + 2]), EMPTY, EMPTY, EMPTY, EMPTY,
            EMPTY, EMPTY, EMPTY, EMPTY
    else
        r = {tag = t[pos], id = t[pos + 1], views = tonumber(t[pos + 2]), vis = EMPTY,
             shares = EMPTY, nets = EMPTY, comments = EMPTY, sums = EMPTY, mets = EMPTY,
             props = EMPTY, fields = EMPTY}
    end
    pos = pos + 3
    if t[pos] == '0' then pos = pos + 1 else r.vis, pos = read_list(t, pos) end
    if t[pos] == '0' then pos = pos + 1 else r.shares, r.nets, pos = read_pairs(t, pos, true) end
    if t[pos] == '0' then pos = pos + 1 else r.comments, pos = read_list(t, pos, tonumber) end
    if t[pos] == '0' then pos = pos + 1 else r.sums, r.mets, pos = read_pairs(t, pos, true) end
    if t[pos] == '0' then
        pos = pos + 1
    else
        r.props, r.fields, pos = read_pairs(t, pos, false)
    end
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

-- The value of each hex digit's byte ("0"-"9", "a"-"f").
local HEX = {}
for i = 0, 9 do
    HEX[48 + i] = i
end
for i = 0, 5 do
    HEX[97 + i] = 10 + i
end

-- R, an answer of counter C's c.call: an error (from redis.pcall) is counted in C and becomes
-- nil. (No command counter_new's callers send answers a table otherwise.)
local function ok(c, r)
    if type(r) == 'table' and r.err then
        c.errors = c.errors + 1
        c.error = r.err
        return nil
    end
    return r
end

-- Fresh lists decoded, by text (see fresh_of()); at most 8 kept, as models are.
local freshes, n_freshes = {}, 0

-- The fresh list TEXT ("<tag><kind><mask>...", see counter_new()) as {d = {bucket -> mask},
-- h = {...}}, by bucket number. A fold's list names up to every bucket (2.5 KB): read a byte
-- at a time it costs 55 us, as much as counting 7-10 of the fold's records. With KEEP, the
-- tables are kept for the next call given the same text: nothing may change them.
local function fresh_of(text, keep)
    local f = keep and freshes[text]
    if f then
        return f
    end
    f = {d = {}, h = {}}
    -- Read a byte at a time, by bucket number: one call per entry costs half of three.
    local byte, fd, fh = string.byte, f.d, f.h
    for i = 1, #text, 5 do
        local t1, t0, kind, m1, m0 = byte(text, i, i + 4)
        local into = kind == 100 and fd or fh -- 'd' or 'h'
        into[HEX[t1] * 16 + HEX[t0]] = HEX[m1] * 16 + HEX[m0]
    end
    if keep then
        if n_freshes >= 8 then
            freshes, n_freshes = {}, 0
        end
        freshes[text] = f
        n_freshes = n_freshes + 1
    end
    return f
end

-- A counter for one call. MODEL as model_of() gives it. FRESH: nil to set the expiry of every
-- day or hour key the call touches, once per call; else the collector's list of the bucket
-- keys that may be new, "<tag><kind><mask>..." (see unit.lua): of the call's one hour (a unit,
-- apply.lua and ack.lua) or, with HOUR ("YYYYMMDDHH": a fold, whose records' hours are many),
-- of the keys of that hour and of its day -- a fold sets the others once per call.
--
-- A command Redis refuses (a key of another type, written by someone else; one the ACL user
-- may not run) is skipped, and counted in c.errors (c.error: the last message): c.call is
-- redis.pcall, and each of its answers goes through ok(). No call may stop half-way: what a
-- fold counted before would be counted again by the next fold of the same entries, and what a
-- unit counted at once (apply.lua, ack.lua's comments) before would be counted again when its
-- requests, answered as of unknown outcome, were sent again. So a call counts the rest and
-- says what it skipped (counter_status()). (A wrapper of redis.pcall taking "..." cost 0.1-0.4
-- us per record of a fold.)
--
-- KEEP: FRESH is of every bucket (a staged chunk's call, a fold from the journal), the same
-- from call to call while the keys the collector knows do not change, so it is kept decoded
-- (see fresh_of()). Not a merged fold's (of the buckets its batch touched: under view-zipf
-- load none was one of the 8 before it) nor a unit's (a few buckets of its own).
local function counter_new(P, model, fresh, hour, keep)
    local c = {P = P, model = model, buckets = {}, set = {}, site = {}, site_days = {},
               tags = {}, errors = 0, call = redis.pcall, fresh = fresh ~= nil,
               at_hour = hour, at_day = hour and string.sub(hour, 1, 8), fd = EMPTY, fh = EMPTY,
               hour_ttl = int(model.hour_ttl), day_ttl = int(model.day_ttl),
               visitors_ttl = int(model.visitors_ttl)}
    if fresh then
        local f = fresh_of(fresh, keep) -- c.fd and c.fh are only read
        c.fd, c.fh = f.d, f.h
    end
    return c
end

-- Bucket TAG of counter C: {tag, kp (its key prefix "P{tag}"), day and hour (of the record
-- last counted in it), on_d and on_h (whether the collector's list speaks of their keys), fd
-- and fh (the metrics whose key of the list's day and hour is still to get its expiry), sd and
-- sh (those whose key's expiry the call set, for the answer), m (its metrics at its hour, see
-- metric_of())}. In a fold most records are of a bucket not met before in the call (128
-- records a call, 256 buckets), so a bucket is a single table.
local function bucket_of(c, tag)
    local b = c.buckets[tag]
    if b then
        return b
    end
    local n = tonumber(tag, 16)
    b = {tag = tag, kp = c.P .. '{' .. tag .. '}', fd = c.fd[n] or 0, fh = c.fh[n] or 0,
         sd = 0, sh = 0, day = false, hour = false, on_d = false, on_h = false, m = false}
    c.buckets[tag] = b
    c.tags[#c.tags + 1] = tag
    return b
end

-- Point bucket B at DAY and HOUR. Does the collector's list speak of their keys? A unit's list
-- speaks of its one day and hour, a fold's of c.at_day and c.at_hour.
local function bucket_at(c, b, day, hour)
    if b.day ~= day then
        b.day, b.on_d = day, c.fresh and (c.at_day == nil or c.at_day == day)
    end
    b.hour, b.on_h, b.m = hour, c.fresh and (c.at_hour == nil or c.at_hour == hour), {}
end

local function expire(c, key, ttl)
    ok(c, c.call('EXPIRE', key, ttl, 'NX'))
end

-- Set the expiry of KEY (TTL: seconds, as text), the day (DAY true) or hour key of METRIC in bucket B, once per call:
-- where the collector's list speaks of it (ON), only if it says the key may be new, noting
-- it in B for the answer.
local function expire_fresh(c, b, on, day, metric, key, ttl)
    if not on then
        if not c.set[key] then
            c.set[key] = true
            expire(c, key, ttl)
        end
        return
    end
    local m = c.model.bit[metric]
    if day then
        if bit.band(b.fd, m) ~= 0 then
            b.fd, b.sd = b.fd - m, b.sd + m
            expire(c, key, ttl)
        end
    elseif bit.band(b.fh, m) ~= 0 then
        b.fh, b.sh = b.fh - m, b.sh + m
        expire(c, key, ttl)
    end
end

-- METRIC in bucket B at its day and hour: {d, h, t (its day, hour and all-time top list keys),
-- fresh (whether bump() is still to see to the expiry of d and h: expire_fresh() does
-- something only the first time it is given a key, so once per bucket, metric and hour is
-- enough)}. Key names are built once per bucket, metric and hour.
local function metric_of(b, metric)
    local kp = b.kp
    local m = {d = kp .. 'd:' .. metric .. ':' .. b.day, h = kp .. 'h:' .. metric .. ':' .. b.hour,
               t = kp .. 't:' .. metric, fresh = true}
    b.m[metric] = m
    return m
end

-- Add N (a number; NS: its text, or nil) to METRIC of article ID in bucket B's hour and day
-- buckets and the all-time top list, and to the day's site totals if the model keeps it there.
-- Site totals are summed over the call and written once per day, into the first bucket seen
-- (readers add every bucket up).
local function bump(c, b, metric, id, n, ns)
    if n == 0 then
        return
    end
    local day = b.day
    if c.model.site[metric] then
        local s = c.site[day]
        if not s then
            s = {b = b, on = b.on_d, n = {}, names = {}}
            c.site[day] = s
            c.site_days[#c.site_days + 1] = day
        end
        if not s.n[metric] then
            s.names[#s.names + 1] = metric
        end
        s.n[metric] = (s.n[metric] or 0) + n
    end
    local m = b.m[metric] or metric_of(b, metric)
    local call, fresh = c.call, m.fresh
    ns = ns or int(n)
    ok(c, call('ZINCRBY', m.d, ns, id))
    if fresh then
        expire_fresh(c, b, b.on_d, true, metric, m.d, c.day_ttl)
    end
    ok(c, call('HINCRBY', m.h, id, ns))
    if fresh then
        m.fresh = false
        expire_fresh(c, b, b.on_h, false, metric, m.h, c.hour_ttl)
    end
    ok(c, call('ZINCRBY', m.t, ns, id))
end

local function pfadd(c, key, list)
    if #list == 1 then
        return (ok(c, c.call('PFADD', key, list[1])) or 0) > 0
    end
    local changed = 0
    for i = 1, #list, 1000 do
        changed = changed +
                      (ok(c, c.call('PFADD', key, unpack(list, i, math.min(i + 999, #list)))) or 0)
    end
    return changed > 0
end

-- Distinct visitors. One HyperLogLog per article and day estimates the day's distinct
-- visitors (ids are salted per day, so a visitor on two days is two visitors, as the contract
-- says). When the estimate grows, the growth is added to the hour (the day's new visitors in
-- that hour: an hour's values add up to the day's), to the all-time total and top list. A
-- view by a visitor already counted today costs one PFADD.
--
-- The estimate gets its expiry when a PFADD makes it. PFADD answers 1 when it changed the
-- estimate, whether it made it or not; but one made of LIST counts about as many as LIST's
-- distinct visitors (off by about 1 % from a few thousand on), far below twice #LIST, so one
-- that counts more held visitors before and got its expiry from the PFADD that made it. The
-- expiry is set while the estimate counts at most twice #LIST (an article's first visitor or
-- two, one at a time), not at each new visitor of a busy article -- and again for an
-- estimate made anew after it was lost (expired before a late fold of its day, deleted),
-- whatever the day's count said.
local function visitors(c, b, totals, id, list)
    local vd = b.kp .. 'v:' .. b.day .. ':' .. id
    if not pfadd(c, vd, list) then
        return
    end
    local m = b.m.visitors or metric_of(b, 'visitors')
    local d = m.d
    local now_count = ok(c, c.call('PFCOUNT', vd))
    if not now_count or now_count <= 2 * #list then
        expire(c, vd, c.visitors_ttl)
    end
    local grown = (now_count or 0) - (tonumber(ok(c, c.call('ZSCORE', d, id)) or '0') or 0)
    if grown <= 0 then
        return
    end
    ok(c, c.call('ZADD', d, int(now_count), id))
    expire_fresh(c, b, b.on_d, true, 'visitors', d, c.day_ttl)
    local h, gs = m.h, int(grown)
    ok(c, c.call('HINCRBY', h, id, gs))
    expire_fresh(c, b, b.on_h, false, 'visitors', h, c.hour_ttl)
    ok(c, c.call('HINCRBY', totals, 'visitors', gs))
    ok(c, c.call('ZINCRBY', m.t, gs, id))
end

-- Count record R filed under DAY ("YYYYMMDD") and HOUR ("YYYYMMDDHH").
local function count_record(c, r, day, hour)
    local id = r.id
    local b = bucket_of(c, r.tag)
    if b.hour ~= hour then
        bucket_at(c, b, day, hour)
    end
    local totals = b.kp .. 'a:' .. id
    if r.views > 0 then
        local ns = int(r.views)
        ok(c, c.call('HINCRBY', totals, 'views', ns))
        bump(c, b, 'views', id, r.views, ns)
    end
    if #r.vis > 0 then
        visitors(c, b, totals, id, r.vis)
    end
    if r.nets ~= EMPTY then
        local shares = 0
        for _, net in ipairs(r.nets) do
            local n = r.shares[net]
            shares = shares + n
            ok(c, c.call('HINCRBY', totals, 'share:' .. net, int(n)))
        end
        if shares > 0 then
            ok(c, c.call('HINCRBY', totals, 'shares', int(shares)))
            bump(c, b, 'shares', id, shares)
        end
    end
    if #r.comments > 0 then
        -- A comment count never goes below 0: fold the deltas in order, flooring each step.
        local start = tonumber(ok(c, c.call('HGET', totals, 'comments')) or '0') or 0
        local cur = start
        for _, d in ipairs(r.comments) do
            cur = cur + d
            if cur < 0 then
                cur = 0
            end
        end
        if cur ~= start then
            ok(c, c.call('HSET', totals, 'comments', int(cur)))
            bump(c, b, 'comments', id, cur - start)
        end
    end
    if r.mets ~= EMPTY then
        for _, m in ipairs(r.mets) do
            ok(c, c.call('HINCRBY', totals, m, int(r.sums[m])))
            bump(c, b, m, id, r.sums[m])
        end
    end
    if r.fields ~= EMPTY then
        for _, f in ipairs(r.fields) do
            ok(c, c.call('HSET', totals, f, r.props[f]))
        end
    end
end

-- Write the call's site totals. Returns the keys whose expiry the call set where the
-- collector's list spoke of them, in the form of that list (empty without one), and the
-- buckets it touched ("0a3f...").
local function counter_finish(c)
    for _, day in ipairs(c.site_days) do
        local s = c.site[day]
        local key = s.b.kp .. 's:' .. day
        for _, metric in ipairs(s.names) do
            local n = int(s.n[metric])
            ok(c, c.call('HINCRBY', key, metric, n))
            ok(c, c.call('HINCRBY', s.b.kp .. 's:all', metric, n))
        end
        expire_fresh(c, s.b, s.on, true, 'site', key, c.day_ttl)
    end
    local expired = {}
    for _, tag in ipairs(c.tags) do
        local b = c.buckets[tag]
        if b.sd ~= 0 then
            expired[#expired + 1] = tag .. 'd' .. string.format('%02x', b.sd)
        end
        if b.sh ~= 0 then
            expired[#expired + 1] = tag .. 'h' .. string.format('%02x', b.sh)
        end
    end
    return table.concat(expired), table.concat(c.tags)
end

-- The status of a unit's answer (see unit.lua) after counter C counted it: "ok", or "ok <n>
-- <the last refusal>" when it skipped N commands Redis refused.
local function counter_status(c)
    if c.errors == 0 then
        return 'ok'
    end
    return 'ok ' .. c.errors .. ' ' .. c.error
end

-- The day and hour keys of Unix time NOW (seconds): "YYYYMMDD", "YYYYMMDDHH".
local function day_hour(now)
    local day = ymd(math.floor(now / 86400))
    return day, day .. string.format('%02d', math.floor((now % 86400) / 3600))
end
