-- reclaim.lua -- folds the journals whose writer has gone: a collector that died, was killed
-- or lost Redis for long leaves its journal; any collector folds it from here. A journal that
-- had no entry for STALE ms is folded (COUNT entries a call) and, once empty, deleted and
-- taken out of the registry; its writer, if alive, starts it again with its next entry.
--
-- KEYS[1]  the journals' registry, P{00}r:journals (see ack.lua)
-- ARGV     P model count stale (stale: ms)
-- Returns {entries folded, the buckets touched, commands refused and skipped, the last
-- refusal or ""} (see fold.lua).

local c = counter_new(ARGV[1], model_of(ARGV[2]), nil)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local budget = tonumber(ARGV[3])
local folded = 0
for _, j in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]),
                              'LIMIT', 0, 16)) do
    local n = fold_journal(c, j, budget - folded)
    folded = folded + n
    journal_left(j, KEYS[1])
    if folded >= budget then
        break
    end
end
local _, tags = counter_finish(c)
return {folded, tags, c.errors, c.error or ''}
