-- staged.lua -- counts the oldest chunk of a writer's staging list (see merged.lua) and
-- removes it, in one atomic step: sent again after a lost reply, it counts the next chunk or
-- none, never one twice. Once the list is empty and the journal too, both go and the journal
-- leaves the registry (see journal_left()).
--
-- KEYS[1]  the journal, P{00}q:<writer>
-- KEYS[2]  the journals' registry (see ack.lua)
-- KEYS[3]  the writer's staging list, P{00}c:<writer>
-- ARGV     P model hour fresh (hour and fresh as merged.lua's: the bucket keys of that hour
--          and its day that may be new, of every bucket -- the writer does not know which
--          buckets a chunk touches)
-- Returns {chunks counted (0 or 1), entries left in the journal, the buckets touched,
-- commands Redis refused and skipped, the last refusal or "", the keys whose expiry it set,
-- chunks left} (see fold.lua).

local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[4], ARGV[3], true)
return fold_answer(c, KEYS[1], KEYS[2], count_staged(c, KEYS[3], 1))
