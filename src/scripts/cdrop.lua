-- cdrop.lua -- deletes an emptied journal of a Redis Cluster with its trimmed count and plan:
-- a reclaimer does it once cplan.lua answers "empty", a writer at its shutdown. Nothing else
-- deletes a cluster journal (its ids must only grow while anything may fold it: a bucket's
-- cursor compares ids, see cpart.lua). A journal with entries is left as it is.
--
-- KEYS[1]  the journal, P{jj}q:<writer>
-- KEYS[2]  its trimmed count, P{jj}n:<writer>
-- KEYS[3]  its plan, P{jj}p:<writer>
-- ARGV     none
-- Returns 1 when the three were deleted (or none existed), 0 when the journal has entries.

if redis.call('XLEN', KEYS[1]) > 0 then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
