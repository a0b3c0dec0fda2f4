-- cstale.lua -- a journal whose writer has gone (a Redis Cluster): the first journal of the
-- registry whose last heartbeat (cheartbeat.lua) is older than STALE ms by Redis's clock,
-- skipping the caller's own. The caller folds it (cplan.lua, cpart.lua) until it is empty,
-- then drops it (cdrop.lua) and takes it out of the registry (cgone.lua). Only reads.
--
-- KEYS[1]  the journals' registry, P{00}r:journals
-- ARGV     stale own...  (stale: ms; own: journals to skip, the caller process's own)
-- Returns the journal's name, or "" when there is none.

local own = {}
for i = 2, #ARGV do
    own[ARGV[i]] = true
end
local cut = redis_ms() - tonumber(ARGV[1])
-- At most #ARGV - 1 of them are skipped: one more is enough.
for _, j in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', cut),
                              'LIMIT', 0, #ARGV)) do
    if not own[j] then
        return j
    end
end
return ''
