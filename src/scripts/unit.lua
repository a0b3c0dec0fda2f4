-- unit.lua -- put before apply.lua and ack.lua (cmake/functions.cmake puts it before every
-- function body): one write unit's checks -- its attempt marker, its fence, each segment's
-- Idempotency-Key and each view's repeat check -- and its answer. What becomes of the records
-- that pass is the caller's: apply.lua counts them at once, ack.lua appends them to a journal
-- that fold.lua counts later.
--
-- KEYS[1]  the unit's attempt marker. It holds the unit's answer once run, so a unit sent
--          again after a lost connection is answered as the first time and counted once.
-- ARGV     P window marker_ttl idem_ttl now fence fresh model segment... (segments run to the
--          last argument; now is the collector's clock, Unix seconds: days and hours are UTC;
--          fence is a time on Redis's clock, Unix ms, 15 digits: past it the unit is refused
--          and its marker says so, so that no copy of it sent earlier runs later either;
--          fresh lists the bucket keys of this day or hour that may be new and need their
--          expiry set, as "<tag><kind><mask>": kind d (day) or h (hour), mask two hex digits
--          of the model's bits -- the collector remembers the others; model is
--          include/tally/model.h as tally_model_arg() writes it (see model.lua): the
--          lifetimes of hour, day and distinct-visitor keys, then the name of each bit from
--          bit 0 up, "site" for the site totals' day key: "777600 34992000 172800 views+
--          visitors shares+ ...")
--   segment: idem_key digest accepted bot prefetch narticles record...
--            (idem_key "" when the requests had no Idempotency-Key, else its marker, which
--            holds "<digest> accepted,bot,prefetch,repeat" once applied; digest names the
--            request's body (16 hex digits); accepted counts the events before repeat checks;
--            each record as count.lua reads it -- with a window > 0 each visitor entry is a
--            view to check for a repeat, and only those that are not add to its views)
-- Returns {"fenced"} when refused past the fence (now or for an earlier copy), else
-- {status, expired, seg...}: status is "ok", or "ok <n> <the last refusal>" when counting
-- skipped N commands Redis refused (see counter_new() in count.lua); expired lists, in the
-- form of fresh, the keys whose expiry this unit set (the collector then knows them); each
-- seg is
--   {first, accepted, bot, prefetch, repeat, repeat_index...}
-- where first is 1 when applied now, 0 when an earlier answer is repeated, 2 when the marker
-- holds another body's digest (nothing applied; the rest is zeros), and each
-- repeat_index is the 1-based position of a repeated view among the segment's visitors.
-- All values were validated by the collector: nothing below fails half-way on them (and a
-- counting command Redis refuses is skipped, see count.lua).

-- HMGET of KEY's fields LIST (any length), as one list.
local function hmget(key, list)
    local got = {}
    for i = 1, #list, 1000 do
        local part = redis.call('HMGET', key, unpack(list, i, math.min(i + 999, #list)))
        for j = 1, #part do
            got[i + j - 1] = part[j]
        end
    end
    return got
end

-- Views are remembered in hashes per window-long slot, visitor -> time of the last view
-- counted: "P{bb}w:<id>:<slot>", slot the view's Unix time divided by the window; the current
-- and the previous slot cover every view within a window. A mark (mark.lua, a Redis Cluster's
-- first step of a journaled write) keeps no attempt marker: it writes its unit's stamp,
-- mark_stamp(), the time followed by a tag of the unit, and a copy of the same unit sent
-- again (after a lost reply) takes a view holding its own stamp for no repeat. A hash gets
-- its expiry (EXPIRE NX) in the step that makes it, not with every view: to tell a new hash,
-- each HSET also writes the field "_" (no visitor's: those are 16 hex digits), so a hash is
-- new exactly when every field written was new, "_" included. (A hash without "_" that an
-- HSET did not make was made by a version that set the expiry whenever it added a field: it
-- has its expiry.)

-- The stamp a mark of a unit at NOW_S writes for each view it remembers: the time followed by
-- six digits that name the unit, "<now><tag>", a number as a time is (Redis keeps either as
-- an integer in a small hash). ATTEMPT ends with the unit's attempt id, "<writer's
-- nonce>-<number>" (its attempt marker's key will do); the tag is the number plus the
-- nonce's last five hex digits, modulo 1,000,000: one writer's units of one second have
-- tags of their own, two writers' are equal one time in a million.
local function mark_stamp(now_s, attempt)
    local nonce, n = string.match(attempt, '(%x%x%x%x%x)%-(%d+)$')
    local tag = nonce and (tonumber(nonce, 16) + tonumber(n)) % 1000000 or 0
    return now_s .. string.format('%06d', tag)
end

-- The time a remembered view's value S holds: a time (Unix seconds), or a mark's stamp.
local function seen_at(s)
    local t = tonumber(s)
    if t >= 1e12 then
        t = math.floor(t / 1000000)
    end
    return t
end

-- Is the view of visitor V at NOW a repeat of a view within WINDOW? CUR and PREV are the
-- article's hashes of NOW's slot and the one before. If not, it is remembered with STAMP
-- (the same time as the collector wrote it, NOW_S; a mark's, see mark_stamp()). OWN: a view
-- found holding STAMP is this unit's own, remembered by an earlier copy of it: no repeat
-- (marks only; elsewhere the attempt marker answers a copy). The most common check: three
-- commands when the visitor is new to the article (HGET, HGET, HSET; and EXPIRE when the
-- HSET made the hash), two when it repeats a view of the slot before, one when it repeats
-- one of this slot.
local function repeat_one(cur, prev, v, now, stamp, window, own)
    local seen = redis.call('HGET', cur, v)
    if own and seen == stamp then
        return false
    end
    seen = seen or redis.call('HGET', prev, v)
    if seen and now - seen_at(seen) < window then
        return true
    end
    if redis.call('HSET', cur, v, stamp, '_', '1') == 2 then
        redis.call('EXPIRE', cur, 2 * window, 'NX')
    end
    return false
end

-- Which of the views VIS (visitors, in order) of one article at NOW (STAMP, WINDOW, OWN, CUR
-- and PREV as for repeat_one()) repeat a view within WINDOW? Returns a list of booleans, one
-- per view, as if each were checked and remembered in turn (a visitor twice in VIS repeats
-- itself), in three commands for the whole list (per 1,000 views): HMGET of the current
-- slot, HMGET of the previous one for the visitors not in it, one HSET of the views that
-- count (and EXPIRE when it made the hash).
local function repeats_of(cur, prev, vis, now, stamp, window, own)
    if #vis == 1 then
        return {repeat_one(cur, prev, vis[1], now, stamp, window, own)}
    end
    local seen = hmget(cur, vis)
    local ask, at = {}, {}
    for i = 1, #vis do
        if not seen[i] then
            ask[#ask + 1] = vis[i]
            at[#ask] = i
        end
    end
    if #ask > 0 then
        local got = hmget(prev, ask)
        for j = 1, #ask do
            seen[at[j]] = got[j]
        end
    end
    local rep, now_seen, set = {}, {}, {}
    for i, v in ipairs(vis) do
        local s = now_seen[v] or seen[i]
        if own and s == stamp then
            rep[i] = false -- remembered by an earlier copy of this unit
            now_seen[v] = now
        elseif s and now - seen_at(s) < window then
            rep[i] = true
        else
            rep[i] = false
            now_seen[v] = now
            set[#set + 1] = v
            set[#set + 1] = stamp
        end
    end
    if #set == 0 then
        return rep
    end
    set[#set + 1] = '_'
    set[#set + 1] = '1'
    local made = 0
    for i = 1, #set, 2000 do
        made = made + redis.call('HSET', cur, unpack(set, i, math.min(i + 1999, #set)))
    end
    if made * 2 == #set then
        redis.call('EXPIRE', cur, 2 * window, 'NX')
    end
    return rep
end

-- The answer of the unit in KEYS and ARGV if it needs no running: the answer its marker
-- holds (a copy sent again), or {"fenced"} past its fence. Nil and Redis's time (Unix ms):
-- run it.
local function unit_answered(KEYS, ARGV)
    local marker = redis.call('GET', KEYS[1])
    if marker then
        return cjson.decode(marker)
    end
    -- Past its fence the collector has answered (or is about to answer) the unit's requests
    -- without knowing: it must not run now, nor later from a copy still queued.
    local clock = redis.call('TIME')
    local ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    if ms > tonumber(ARGV[6]) then
        local fenced = {'fenced'}
        redis.call('SET', KEYS[1], cjson.encode(fenced), 'EX', tonumber(ARGV[3]))
        return fenced
    end
    return nil, ms
end

-- A segment's answer from its Idempotency-Key marker IDEM ("" for none) for a body of
-- DIGEST: {0, accepted, bot, prefetch, repeat} repeats an earlier answer, {2, 0, 0, 0, 0}
-- says the key holds another body's digest (nothing applied). Nil: apply the segment.
local function idem_answered(idem, digest)
    local prev = idem ~= '' and redis.call('GET', idem)
    if not prev then
        return nil
    end
    local prev_digest, prev_answer = string.match(prev, '^(%x+) ([%d,]+)$')
    if not prev_digest then
        if string.find(prev, '^%d+,%d+,%d+,%d+$') then
            prev_answer = prev -- written before digests were kept: the answer alone
        else
            prev_digest = prev -- a digest alone: this body's write is under way
        end
    end
    if prev_digest and prev_digest ~= digest then
        return {2, 0, 0, 0, 0}
    end
    if not prev_answer then
        return nil
    end
    local seg = {0}
    for n in string.gmatch(prev_answer, '%d+') do
        seg[#seg + 1] = tonumber(n)
    end
    return seg
end

-- The answer of an applied segment, which its Idempotency-Key marker IDEM (if any) keeps
-- for IDEM_TTL seconds: ACCEPTED events of which REPEATS views were repeats (REP: their
-- 1-based positions among the segment's visitors), BOT and PREFETCH ignored.
local function idem_settle(idem, digest, idem_ttl, accepted, bot, prefetch, repeats, rep)
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
    return seg
end

-- Run the unit in KEYS and ARGV. SINK(r, from, to, day, hour, now) takes each record that
-- passed its checks (r.views then counts only the views to count; FROM..TO are its
-- arguments); FINISH() returns the answer's "expired" and its status (counter_status()).
-- Returns the script's answer.
local function run_unit(KEYS, ARGV, sink, finish)
    local answered = unit_answered(KEYS, ARGV)
    if answered then
        return answered
    end
    local window = tonumber(ARGV[2])
    local idem_ttl = tonumber(ARGV[4])
    local now = tonumber(ARGV[5])
    local day, hour = day_hour(now)
    local pos = 9
    local cur_slot, prev_slot -- ":<slot>" of the repeat-view hashes (see repeat_one())
    if window > 0 then
        local slot = math.floor(now / window)
        cur_slot, prev_slot = ':' .. slot, ':' .. (slot - 1)
    end

    local result = {'ok', ''}
    local s = 1
    while pos <= #ARGV do
        s = s + 1
        local idem, digest = ARGV[pos], ARGV[pos + 1]
        local accepted, bot = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
        local prefetch, narticles = tonumber(ARGV[pos + 4]), tonumber(ARGV[pos + 5])
        pos = pos + 6
        local seg = idem_answered(idem, digest)
        if seg then
            for _ = 1, narticles do
                pos = skip_record(ARGV, pos)
            end
        else
            local rep, repeats, seen = {}, 0, 0
            for _ = 1, narticles do
                local from = pos
                local r
                r, pos = read_record(ARGV, pos)
                if window > 0 and #r.vis > 0 then
                    local kw = ARGV[1] .. '{' .. r.tag .. '}w:' .. r.id
                    local is_rep = repeats_of(kw .. cur_slot, kw .. prev_slot, r.vis, now,
                                              ARGV[5], window)
                    for i = 1, #r.vis do
                        if is_rep[i] then
                            repeats = repeats + 1
                            rep[#rep + 1] = seen + i
                        else
                            r.views = r.views + 1
                        end
                    end
                end
                seen = seen + #r.vis
                sink(r, from, pos - 1, day, hour, now)
            end
            seg = idem_settle(idem, digest, idem_ttl, accepted, bot, prefetch, repeats, rep)
        end
        result[s + 1] = seg
    end
    result[2], result[1] = finish()
    redis.call('SET', KEYS[1], cjson.encode(result), 'EX', tonumber(ARGV[3]))
    return result
end
