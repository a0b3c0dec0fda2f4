-- cgone.lua -- takes a journal out of the registry (a Redis Cluster) once a reclaimer has
-- folded and dropped it (cdrop.lua): only if its last heartbeat is still older than STALE ms by
-- Redis's clock -- a writer that came back meanwhile keeps its place.
--
-- KEYS[1]  the journals' registry, P{00}r:journals
-- ARGV     journal stale  (stale: ms)
-- Returns 1 when it was taken out, else 0.

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < redis_ms() - tonumber(ARGV[2]) then
    return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
