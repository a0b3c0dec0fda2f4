-- fold.lua -- counts the oldest entries of one writer's journal (see ack.lua) and removes
-- them, in one atomic step: a fold sent again after a lost reply, or run by another collector
-- at the same time, finds only what is left, so nothing is counted twice and nothing
-- acknowledged is left out.
--
-- KEYS[1]  the journal, P{00}q:<writer>
-- KEYS[2]  the journals' registry (see ack.lua): an emptied journal is deleted and taken out
--          of it (its writer's next entry starts both again), so nothing stays behind
-- KEYS[3]  the writer's staging list, P{00}c:<writer>: while it holds chunks (older than
--          any entry), nothing is counted here and the answer is {"staged"} (see merged.lua)
-- ARGV     P model count hour fresh step [before] (count: the most entries to fold in this
--          call; model as apply.lua; hour and fresh: the bucket keys of that hour and its day
--          that may be new, see counter_new; step: the most merged records to count in this
--          call, the rest staged in KEYS[3] as merged.lua does; before: an entry id -- only
--          entries before it are folded, those from it on are the writer's to fold from its
--          merge, see merged.lua)
-- Returns {entries folded, entries left, the buckets touched ("0a3f..."), commands Redis
-- refused and skipped (see counter_new), the last refusal or "", the keys whose expiry it
-- set where fresh spoke of them (in its form), chunks in the staging list}.

if redis.call('EXISTS', KEYS[3]) == 1 then
    return {'staged'}
end
local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[5], ARGV[4], true)
return fold_answer(c, KEYS[1], KEYS[2], fold_journal(c, KEYS[1], tonumber(ARGV[3]), ARGV[7],
                                                     tonumber(ARGV[6]), KEYS[3], KEYS[2]))
