-- cheartbeat.lua -- a writer's folder says its journal is alive (a Redis Cluster): the
-- journal's score in the registry becomes Redis's clock. The folder sends it at start and
-- every second, idle or not; its writer journals a unit only while the last heartbeat was
-- confirmed recently, so a journal holding entries is in the registry with a fresh score while
-- its writer lives (cstale.lua finds the others).
--
-- KEYS[1]  the journals' registry, P{00}r:journals (journal -> Redis time in ms)
-- ARGV     journal (P{jj}q:<writer>)
-- Returns the score set: Redis's clock in Unix ms.

local ms = redis_ms()
redis.call('ZADD', KEYS[1], string.format('%d', ms), ARGV[1])
return ms
