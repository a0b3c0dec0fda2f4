-- ack.lua -- acknowledges one write unit with one append: its checks (attempt marker, fence,
-- Idempotency-Keys, repeat views: see unit.lua) and one journal entry holding the records of
-- the segments that were applied, all in one atomic step. The collector counts the entry
-- later (merged.lua, from its own merge of what it acknowledged; fold.lua and reclaim.lua
-- from the journal); until then it is the durable record of what was acknowledged.
--
-- Comment deltas are counted here, at once, not journaled: a count that never goes below 0
-- depends on the order of its deltas, and only Redis's order of acknowledgement is the same for
-- every collector (journals are folded each in its own order). They come from comment systems,
-- a few per article, not from readers.
--
-- KEYS[1]  the unit's attempt marker (see unit.lua)
-- KEYS[2]  the writer's journal, a stream: P{00}q:<writer> (on a Redis Cluster P{jj}q:<writer>,
--          jj a bucket of a master of its own: see cplan.lua)
-- KEYS[3]  one Redis: the journals' registry, a sorted set: journal -> Redis time of its last
--          entry (ms), which tells a journal whose writer has gone (see reclaim.lua).
--          A Redis Cluster: no registry -- the writer's folder keeps the journal in it with its
--          heartbeat (cheartbeat.lua), and the registry lives in another slot. KEYS[3] is then
--          absent (two KEYS) or the journal's trimmed count P{jj}n:<writer>, which the append
--          reads (journal_next()) and a cluster call must declare; either way the entry is
--          appended without the ZADD.
-- ARGV     P window marker_ttl idem_ttl now fence fresh model segment... as in unit.lua,
--          but each segment is
--            idem_key digest accepted bot prefetch
--            nchecks (cur prev nvisitors visitor...)... the views to check, with a window > 0:
--                                                       cur and prev the article's repeat-view
--                                                       hashes (see unit.lua), named in full
--            ncomments (tag id ndeltas delta...)...     the comment deltas
--            records                                    every record's other counts
--          records is the text of the journal entry for the segment: each record as
--          count.lua reads it, without comment deltas, its tokens joined by "\n" (no token
--          holds one: article ids have no whitespace); the checks list its visitors in the
--          same order. This script reads none of it: the collector merges what it
--          acknowledged itself.
-- Returns unit.lua's answer with two more elements: the id of the journal entry, or "" when
-- nothing was appended, and its number (see below), or 0 when nothing was appended.
--
-- An entry: n <now> c <checked> r <repeats> u <unit> s <number> a <records>, the records of
-- every segment applied, joined by "\n". checked is 1 when each visitor of the records is a
-- view checked against the repeat window (only those not in repeats count, see journal.lua),
-- 0 when the visitors only feed the distinct-visitor estimates; repeats lists,
-- space-separated, the 1-based positions of the repeated views among the entry's visitors;
-- unit is the unit's attempt marker, unique to it: an entry id alone may come again (an
-- emptied journal is deleted, and a new one starts its ids afresh), so merged.lua checks
-- both. number counts the entries the journal has taken (XADD) since it was made, this one
-- included: its length plus the entries folds trimmed from it (trim_journal() counts them in
-- P{00}n:<writer>, deleted with the journal; see journal_next()). Each XADD raises it by
-- one, whoever sends it; a fold's trim leaves it as it is; it starts again only in a journal
-- deleted and made afresh (nothing in tally removes single entries: an XDEL by hand would
-- lower it). So between two entries of one making of a journal
-- numbered a and b, exactly b - a - 1 entries were appended: merged.lua checks a batch from
-- its first and last entries alone (see there). (Redis keeps that count itself, XINFO
-- STREAM's entries-added, but reads the first and the last entry out with it: 10-50 µs an
-- append, against 2 µs for XLEN and HMGET.)

-- Nothing is written unless the append can be: a Redis user without XADD or ZADD (an ACL
-- from before the journal) would otherwise leave markers and repeat views set for events
-- that are in no journal -- a retry answered "counted" from its marker.
local registry = KEYS[3]
if registry == trimmed_of(KEYS[2]) then
    registry = nil
end
if not redis.acl_check_cmd('XADD', KEYS[2], '*', 'n', '0', 'c', '0', 'r', '', 'u', '', 'a', '') or
    (registry and not redis.acl_check_cmd('ZADD', registry, '0', KEYS[2])) then
    return redis.error_reply('NOPERM the Redis user may not append to the journal (XADD, ZADD ' ..
                             'on its keys): see deploy/redis.conf')
end

local answered, clock = unit_answered(KEYS, ARGV)
if answered then
    return answered
end
local window = tonumber(ARGV[2])
local idem_ttl = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local c, day, hour -- made for the first comment delta: most units have none
local parts, reps = {}, {}
local entry_vis = 0 -- visitors of the segments appended so far
local result = {'ok', ''}
local pos = 9

-- The position after the (tag id n value...) lists of the count at ARGV[p].
local function skip_lists(p)
    local n = tonumber(ARGV[p])
    p = p + 1
    for _ = 1, n do
        p = p + 3 + tonumber(ARGV[p + 2])
    end
    return p
end

while pos <= #ARGV do
    local idem, digest = ARGV[pos], ARGV[pos + 1]
    local seg = idem_answered(idem, digest)
    if seg then
        pos = skip_lists(skip_lists(pos + 5)) + 1
    else
        local accepted, bot = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
        local prefetch = tonumber(ARGV[pos + 4])
        local rep, seen = {}, 0
        pos = pos + 6
        for _ = 1, tonumber(ARGV[pos - 1]) do
            local n = tonumber(ARGV[pos + 2])
            if n == 1 then
                if repeat_one(ARGV[pos], ARGV[pos + 1], ARGV[pos + 3], now, ARGV[5], window) then
                    rep[#rep + 1] = seen + 1
                    reps[#reps + 1] = entry_vis + seen + 1
                end
            else
                local is_rep = repeats_of(ARGV[pos], ARGV[pos + 1],
                                          {unpack(ARGV, pos + 3, pos + 2 + n)}, now, ARGV[5],
                                          window)
                for i = 1, n do
                    if is_rep[i] then
                        rep[#rep + 1] = seen + i
                        reps[#reps + 1] = entry_vis + seen + i
                    end
                end
            end
            seen = seen + n
            pos = pos + 3 + n
        end
        pos = pos + 1
        for _ = 1, tonumber(ARGV[pos - 1]) do
            if not c then
                c = counter_new(ARGV[1], model_of(ARGV[8]), ARGV[7])
                day, hour = day_hour(now)
            end
            local nd = tonumber(ARGV[pos + 2])
            local deltas = {}
            for i = 1, nd do
                deltas[i] = tonumber(ARGV[pos + 2 + i])
            end
            count_record(c, {tag = ARGV[pos], id = ARGV[pos + 1], views = 0, vis = EMPTY,
                             nets = EMPTY, shares = EMPTY, comments = deltas, mets = EMPTY,
                             sums = EMPTY, fields = EMPTY, props = EMPTY},
                         day, hour)
            pos = pos + 3 + nd
        end
        if ARGV[pos] ~= '' then
            parts[#parts + 1] = ARGV[pos]
        end
        pos = pos + 1
        entry_vis = entry_vis + seen
        seg = idem_settle(idem, digest, idem_ttl, accepted, bot, prefetch, #rep, rep)
    end
    result[#result + 1] = seg
end
if c then
    result[1], result[2] = counter_status(c), (counter_finish(c))
end
local id, number = '', 0
if #parts > 0 then
    local at
    number, at = journal_next(KEYS[2], clock)
    id = redis.call('XADD', KEYS[2], at, 'n', ARGV[5], 'c', window > 0 and '1' or '0',
                    'r', table.concat(reps, ' '), 'u', KEYS[1],
                    's', string.format('%d', number),
                    'a', table.concat(parts, '\n'))
    if registry then
        redis.call('ZADD', registry, clock, KEYS[2])
    end
end
result[#result + 1] = id
result[#result + 1] = number
redis.call('SET', KEYS[1], cjson.encode(result), 'EX', tonumber(ARGV[3]))
return result
