-- cdrop.lua -- deletes an emptied journal of a Redis Cluster with its plan: a reclaimer does it
-- once cplan.lua answers "empty", a writer at its shutdown. Nothing else deletes a cluster
-- journal (its ids must only grow while anything may fold it: a bucket's cursor compares ids,
-- see cpart.lua). A journal with entries is left as it is.
--
-- Its trimmed count goes too, but for the journal's high-water mark (field h, the last id its
-- plans trimmed), kept two days -- as long as a cursor lives (cpart.lua) --: a writer whose
-- journal a reclaimer dropped while it lived (stalled past the heartbeats' 5 s) makes it anew
-- at its next append, with ids past the mark (journal_next()) even where the master's clock
-- is behind the one that numbered the old entries, so no cursor takes its new entries for
-- counted ones.
--
-- KEYS[1]  the journal, P{jj}q:<writer>
-- KEYS[2]  its trimmed count, P{jj}n:<writer>
-- KEYS[3]  its plan, P{jj}p:<writer>
-- ARGV     none
-- Returns 1 when the journal and its plan were deleted (or none existed), 0 when the journal
-- has entries.

if redis.call('XLEN', KEYS[1]) > 0 then
    return 0
end
local high = redis.call('HGET', KEYS[2], 'h')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if high then
    redis.call('HSET', KEYS[2], 'h', high)
    redis.call('EXPIRE', KEYS[2], 172800)
end
return 1
