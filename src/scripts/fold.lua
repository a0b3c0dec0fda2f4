-- fold.lua -- counts the oldest entries of one writer's journal (see ack.lua) and removes
-- them, in one atomic step: a fold sent again after a lost reply, or run by another collector
-- at the same time, finds only what is left, so nothing is counted twice and nothing
-- acknowledged is left out.
--
-- KEYS[1]  the journal, P{00}q:<writer>
-- KEYS[2]  the journals' registry (see ack.lua): an emptied journal is deleted and taken out
--          of it (its writer's next entry starts both again), so nothing stays behind
-- ARGV     P model count hour fresh [before] (count: the most entries to fold in this call;
--          model as apply.lua; hour and fresh: the bucket keys of that hour and its day that
--          may be new, see counter_new; before: an entry id -- only entries before it are
--          folded, those from it on are the writer's to fold from its merge, see merged.lua)
-- Returns {entries folded, entries left, the buckets touched ("0a3f..."), commands Redis
-- refused and skipped (see counter_new), the last refusal or "", the keys whose expiry it
-- set where fresh spoke of them (in its form)}.

local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[5], ARGV[4])
return fold_answer(c, KEYS[1], KEYS[2], fold_journal(c, KEYS[1], tonumber(ARGV[3]), ARGV[6]))
