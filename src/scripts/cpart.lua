-- cpart.lua -- the bucket's side of a fold on a Redis Cluster: counts one bucket's part of a
-- journal's plan (see cplan.lua) and moves the journal's cursor in the bucket past it, in one
-- atomic step in the bucket's slot. The cursor, P{bb}f:<writer>, is the last id of the last
-- plan of that journal counted into the bucket: a part whose last id is not past it (sent
-- again after a lost reply, folded by a reclaimer and the owner at once, a DELETE's drain) was
-- counted already and counts nothing. Ids are compared as numbers (id_before()).
--
-- A cursor inside the plan (at or past its first id, before its last) counts nothing either
-- and answers {"overlap", cursor}: the plan starts before entries this bucket has counted.
-- That happens only after the journal's master failed over and its replica had not received
-- a plan's trim (Redis replicates asynchronously) while the plan's parts were counted here:
-- the promoted journal holds entries counted already, and a plan made from it can straddle
-- the cursor. The collector then plans again up to the cursor (cplan.lua's upto), a plan this
-- bucket answers "done" and the others count, so nothing is counted twice.
--
-- KEYS[1]  the cursor, P{bb}f:<writer> (a string, 2 days)
-- KEYS[2..] every key counting the chunk may touch (declared, so that a slot being migrated
--          refuses the call whole; the script reads none of them by position)
-- ARGV     P model first_id last_id hour fresh chunk
--          first_id and last_id: the plan's first and last ids; hour and fresh: as merged.lua's, the bucket keys of
--          that hour and its day that may be new (see counter_new: "" says none may be; a
--          caller that does not know names them all); the keys of the records' other hours
--          and days get their expiry once per call; chunk: the part, as cplan.lua answers it
-- Returns {"done"} when the cursor is at or past last_id (nothing counted), {"overlap",
-- cursor} when it is inside the plan (nothing counted); else {the buckets
-- touched ("0a3f..."), commands Redis refused and skipped (see counter_new), the last refusal
-- or "", the keys whose expiry it set where fresh spoke of them (in its form)}, as fold.lua
-- answers without the journal's fields.

local cursor = redis.call('GET', KEYS[1])
if cursor then
    if not id_before(cursor, ARGV[4]) then
        return {'done'}
    end
    if not id_before(cursor, ARGV[3]) then
        return {'overlap', cursor}
    end
end
local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[6], ARGV[5], true)
count_chunk(c, ARGV[7])
local expired, tags = counter_finish(c)
redis.call('SET', KEYS[1], ARGV[4], 'EX', 172800)
return {tags, c.errors, c.error or '', expired}
