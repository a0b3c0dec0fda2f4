-- ack.lua -- acknowledges one write unit with one append: its checks (attempt marker, fence,
-- Idempotency-Keys, repeat views: see unit.lua) and one journal entry holding the records that
-- passed, all in one atomic step. fold.lua counts the entry later; until then it is the
-- durable record of what was acknowledged.
--
-- Comment deltas are counted here, at once, not journaled: a count that never goes below 0
-- depends on the order of its deltas, and only Redis's order of acknowledgement is the same for
-- every collector (journals are folded each in its own order). They come from comment systems,
-- a few per article, not from readers.
--
-- KEYS[1]  the unit's attempt marker (see unit.lua)
-- KEYS[2]  the writer's journal, a stream: P{00}q:<writer>
-- KEYS[3]  the journals' registry, a sorted set: journal -> Redis time of its last entry (ms),
--          which tells a journal whose writer has gone (see reclaim.lua)
-- ARGV     the unit, as unit.lua reads it. Returns unit.lua's answer.
--
-- An entry: n <now> a <records>, the records as count.lua reads them joined by "\n" (no token
-- holds one: article ids have no whitespace), each with its views resolved -- repeats are
-- gone and the visitors only feed the estimates -- and without comments.

-- Nothing is written unless the append can be: a Redis user without XADD or ZADD (an ACL
-- from before the journal) would otherwise leave markers and repeat views set for events
-- that are in no journal -- a retry answered "counted" from its marker.
if not redis.acl_check_cmd('XADD', KEYS[2], '*', 'n', '0', 'a', '') or
    not redis.acl_check_cmd('ZADD', KEYS[3], '0', KEYS[2]) then
    return redis.error_reply('NOPERM the Redis user may not append to the journal (XADD, ZADD ' ..
                             'on its keys): see deploy/redis.conf')
end

local c = counter_new(ARGV[1], model_of(ARGV[8]), ARGV[7])
local parts = {}

-- Append to T the count of ORDER's names and each name with its value in MAP.
local function add_pairs(t, order, map)
    t[#t + 1] = #order
    for _, k in ipairs(order) do
        t[#t + 1] = k
        t[#t + 1] = map[k]
    end
end

-- Record R as journal text: its tokens, comments left out.
local function journal_text(r)
    local t = {r.tag, r.id, r.views, #r.vis}
    for _, v in ipairs(r.vis) do
        t[#t + 1] = v
    end
    add_pairs(t, r.nets, r.shares)
    t[#t + 1] = 0
    add_pairs(t, r.mets, r.sums)
    add_pairs(t, r.fields, r.props)
    return table.concat(t, '\n')
end

return run_unit(KEYS, ARGV, function(r, from, to, day, hour)
    if #r.comments > 0 then
        count_record(c, {tag = r.tag, id = r.id, views = 0, vis = EMPTY, nets = EMPTY,
                         shares = EMPTY, comments = r.comments, mets = EMPTY, sums = EMPTY,
                         fields = EMPTY, props = EMPTY},
                     day, hour)
        if r.views == 0 and #r.vis == 0 and #r.nets == 0 and #r.mets == 0 and #r.fields == 0 then
            return
        end
    end
    if #r.comments == 0 then
        -- The record's arguments as they came, but for its views (the repeats are gone).
        parts[#parts + 1] = r.tag .. '\n' .. r.id .. '\n' .. r.views .. '\n' ..
                            table.concat(ARGV, '\n', from + 3, to)
    else
        parts[#parts + 1] = journal_text(r)
    end
end, function()
    local expired = counter_finish(c)
    if #parts > 0 then
        local clock = redis.call('TIME')
        redis.call('XADD', KEYS[2], '*', 'n', ARGV[5], 'a', table.concat(parts, '\n'))
        redis.call('ZADD', KEYS[3], tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000),
                   KEYS[2])
    end
    return expired
end)
