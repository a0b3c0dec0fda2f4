-- reclaim.lua -- folds the journals whose writer has gone: a collector that died, was killed
-- or lost Redis for long leaves its journal; any collector folds it from here. A journal that
-- had no entry for STALE ms is folded (COUNT entries a call) and, once empty, deleted and
-- taken out of the registry; its writer, if alive, starts it again with its next entry. A
-- call folds one journal (the caller calls again while it finds work).
-- Chunks its writer staged (see merged.lua) are older than its entries: they are counted
-- first, one chunk a call; a fold here counts at most STEP merged records and stages the
-- rest the same way, so a call holds Redis for about STEP records at most.
--
-- KEYS[1]  the journals' registry, P{00}r:journals (see ack.lua)
-- ARGV     P model count stale step (stale: ms; step: see fold.lua)
-- Returns {entries folded, the buckets touched, commands refused and skipped, the last
-- refusal or "", staged chunks counted, staged chunks left in the journal's list} (see
-- fold.lua).

local c = counter_new(ARGV[1], model_of(ARGV[2]), nil)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local budget = tonumber(ARGV[3])
local folded, chunks, left = 0, 0, 0
for _, j in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]),
                              'LIMIT', 0, 16)) do
    local staged = staged_of(ARGV[1], j)
    -- Chunks staged by a collector whose Redis user may stage, which this one's may not pop
    -- (an ACL from before staging, in a collector upgraded later than the others): the
    -- journal is left to a collector that may, rather than refused half-way.
    if redis.call('EXISTS', staged) == 0 or may_stage(staged) then
        chunks = count_staged(c, staged, 1)
        if chunks > 0 then
            journal_left(j, KEYS[1], staged)
            left = chunks_left(staged)
            break
        end
        local n = fold_journal(c, j, budget - folded, nil, tonumber(ARGV[5]), staged, nil)
        folded = folded + n
        journal_left(j, KEYS[1], staged)
        left = chunks_left(staged)
        if n > 0 or left > 0 then
            break -- one journal a call: at most STEP records counted
        end
    end
end
local _, tags = counter_finish(c)
return {folded, tags, c.errors, c.error or '', chunks, left}
