-- cstale.lua -- a journal whose writer has gone (a Redis Cluster): one of the journals of the
-- registry whose last heartbeat (cheartbeat.lua) is older than STALE ms by Redis's clock,
-- skipping those the caller names. The caller folds it (cplan.lua, cpart.lua) until it is empty,
-- then drops it (cdrop.lua) and takes it out of the registry (cgone.lua). Only reads.
--
-- Which one: of the (at most SPREAD) stalest, the PICK-th (modulo their number). Every worker
-- of every collector looks once a second; given the stalest alone, they would all fold the same
-- journal at once -- safe (its cursors count each plan once), but the others would wait
-- their turn, one journal at a time: collectors killed together leave one journal per worker.
-- A caller passes a random PICK, so the lookers spread over the journals gone.
--
-- KEYS[1]  the journals' registry, P{00}r:journals
-- ARGV     stale pick skip...  (stale: ms; pick: an integer >= 0; skip: journals to skip, the
--          caller process's own and those whose fold failed a moment ago: one that cannot be
--          folded for now -- its slot half-moved, its master failing over -- holds up no other)
-- Returns the journal's name, or "" when there is none.

local SPREAD = 16
local skip = {}
for i = 3, #ARGV do
    skip[ARGV[i]] = true
end
local cut = redis_ms() - tonumber(ARGV[1])
local stale = {}
-- At most #ARGV - 2 of them are skipped.
for _, j in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', cut),
                              'LIMIT', 0, SPREAD + #ARGV - 2)) do
    if not skip[j] and #stale < SPREAD then
        stale[#stale + 1] = j
    end
end
if #stale == 0 then
    return ''
end
return stale[(tonumber(ARGV[2]) or 0) % #stale + 1]
