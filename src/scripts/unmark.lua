-- unmark.lua -- on a Redis Cluster, forgets views that mark.lua remembered for a write that was
-- then not acknowledged (its append to the journal surely failed, or another part of it
-- did): so that the write sent again is not taken for a repeat of itself.
--
-- KEYS     the window hashes the views were remembered in (P{bb}w:<id>:<slot>), one per view
-- ARGV     at attempt visitor...: AT, the time the mark wrote (its unit's now, as the collector
--          wrote it), and ATTEMPT, its unit's attempt id: together its stamp (mark_stamp(), see
--          unit.lua); then the visitor id of each key's view
-- Returns the views forgotten. A field that holds another stamp (a later view counted since)
-- stays.

local stamp = mark_stamp(ARGV[1], ARGV[2])
local n = 0
for i = 1, #KEYS do
    if redis.call('HGET', KEYS[i], ARGV[i + 2]) == stamp then
        n = n + redis.call('HDEL', KEYS[i], ARGV[i + 2])
    end
end
return n
