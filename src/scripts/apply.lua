-- apply.lua -- applies one write unit atomically: every counter of every event in it (totals,
-- hourly and daily buckets, top lists, distinct visitors), the repeat-view checks and the
-- idempotency markers. Used where the collector keeps no journal (a Redis Cluster, or
-- --fold-interval 0); else ack.lua takes the unit and fold.lua counts it.
--
-- KEYS[1]  the unit's attempt marker (see unit.lua)
-- KEYS[2..] in Redis Cluster, every other key the unit touches (all in one slot), so that a
--          migrating slot is refused before anything runs; unused by the script itself.
-- ARGV     the unit, as unit.lua reads it. Returns unit.lua's answer.
--
-- Keys of one article share its tag's slot: P{tag}kind:... (see include/tally/keys.h).

local c = counter_new(ARGV[1], model_of(ARGV[8]), ARGV[7])
return run_unit(KEYS, ARGV, function(r, _, _, day, hour)
    count_record(c, r, day, hour)
end, function()
    return (counter_finish(c)), counter_status(c)
end)
