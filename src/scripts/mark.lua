-- mark.lua -- the first of two steps of a journaled write with a repeat-view window on a Redis
-- Cluster: one bucket's part of the write checked -- its fence, each view against the window,
-- remembering those that are not repeats in the bucket's window hashes -- and nothing
-- counted. The collector then appends the views that are not repeats to its journal (ack.lua,
-- in the journal's slot), or, when that surely failed, asks unmark.lua to forget them.
--
-- No attempt marker is read or written: each view is remembered with the unit's stamp
-- (mark_stamp() in unit.lua: its time and a tag of the unit, taken from the end of KEYS[1]),
-- and a copy of the unit sent again after a lost reply finds its own stamps and answers the
-- same repeats. Its arguments are its views alone. (A mark is one call per write and bucket:
-- its marker's GET and SET, and a unit's arguments, were over a third of its cost; see
-- docs/scaling.md.)
--
-- KEYS[1]  the unit's attempt marker (named, never written: the unit's stamp comes from it),
--          then for each record the article's repeat-view hashes P{bb}w:<id>:<slot> of the
--          unit's slot and of the one before (see unit.lua)
-- ARGV     window now fence segment...: now as in unit.lua (the collector's clock, Unix
--          seconds), fence a time on Redis's clock (Unix ms, 15 digits) past which the unit
--          is refused and writes nothing (a copy of it reaching Redis later is past it too);
--          each segment is
--            accepted bot prefetch nrecords (nvisitors visitor...)...
--          a record per article with views, in the order of its keys.
-- Returns unit.lua's answer, its "expired" empty: {"fenced"}, or {"ok", "", seg...}, each seg
-- {1, accepted, bot, prefetch, repeat, repeat_index...}.

local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[3]) then
    return {'fenced'}
end
local window, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local stamp = mark_stamp(ARGV[2], KEYS[1])
local result = {'ok', ''}
local pos, k = 4, 2
while pos <= #ARGV do
    local accepted, nrec = tonumber(ARGV[pos]), tonumber(ARGV[pos + 3])
    local seg = {1, 0, tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2]), 0}
    local seen = 0
    pos = pos + 4
    for _ = 1, nrec do
        local n = tonumber(ARGV[pos])
        local is_rep = repeats_of(KEYS[k], KEYS[k + 1], {unpack(ARGV, pos + 1, pos + n)}, now,
                                  stamp, window, true)
        for i = 1, n do
            if is_rep[i] then
                seg[#seg + 1] = seen + i
            end
        end
        seen = seen + n
        pos = pos + 1 + n
        k = k + 2
    end
    seg[5] = #seg - 5
    seg[2] = accepted - seg[5]
    result[#result + 1] = seg
end
return result
