-- merged.lua -- counts the oldest entries of one writer's journal (see ack.lua) from the
-- writer's own merge of them, and removes them, in one atomic step. The writer knows what it
-- appended: it adds up its entries' records per article and hour as their acks come back, so
-- that this script parses no entry and counts each merged record once. It counts them only if
-- the journal starts with exactly the entries the merge holds (their number, and the ids and
-- units of the first and the last): a fold sent again after a lost reply, an entry the writer
-- does not know of (an ack whose reply was lost), or entries another collector folded (a
-- DELETE) make it count nothing and answer "stale"; the writer then folds what is left from
-- the journal itself (fold.lua).
--
-- A call holds Redis for what it counts, so a large merge is not counted in one: the caller
-- passes at most a step's worth of records to count here and the rest as chunks, which this
-- call puts, in the same atomic step as the trim, in the writer's staging list; staged.lua
-- then counts them a chunk a call (each removed in the step that counts it). Nothing of the
-- batch is lost or counted twice whichever call's reply is lost: the entries are gone from the
-- journal exactly when their records are counted or staged. While the staging list holds
-- chunks, this script and fold.lua count nothing and answer "staged": the writer counts its
-- chunks first (a property's latest value must not be overwritten by an older one).
--
-- KEYS[1]  the journal, P{00}q:<writer>
-- KEYS[2]  the journals' registry (see ack.lua)
-- KEYS[3]  the writer's staging list, P{00}c:<writer> (see journal.lua)
-- ARGV     P model n first last first_unit last_unit hour fresh nchunks chunk... record...
--          n entries, the ids and the units (see ack.lua) of the first and the last: the
--          oldest n of the journal; hour and fresh: the bucket keys of that hour and its day
--          that may be new (see counter_new); each chunk: records as staged.lua reads them;
--          each record: time (Unix seconds: its hour) and the record as count.lua reads it
-- Returns {"stale"}, {"staged"}, or {entries folded, entries left, the buckets touched,
-- commands Redis refused and skipped, the last refusal or "", the keys whose expiry it set,
-- chunks staged} as fold.lua
-- does.

-- The value of FIELD in stream entry E.
local function field(e, name)
    for i = 1, #e[2], 2 do
        if e[2][i] == name then
            return e[2][i + 1]
        end
    end
    return nil
end

if redis.call('EXISTS', KEYS[3]) == 1 then
    return {'staged'}
end
local n = tonumber(ARGV[3])
local e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', n)
if #e ~= n or e[1][1] ~= ARGV[4] or e[n][1] ~= ARGV[5] or field(e[1], 'u') ~= ARGV[6] or
    field(e[n], 'u') ~= ARGV[7] then
    return {'stale'}
end
local chunks = tonumber(ARGV[10])
-- A Redis user from before staging (its ACL without RPUSH and LPOP) may not stage: then this
-- call counts the chunks too, after the records, as a fold did before it was made in steps.
local staging = chunks > 0 and may_stage(KEYS[3])
-- As in fold_journal(): trimmed before anything is counted, which cannot stop half-way.
redis.call('XTRIM', KEYS[1], 'MINID', next_id(ARGV[5]))
if staging then
    stage(KEYS[3], {unpack(ARGV, 11, 10 + chunks)}, KEYS[1], KEYS[2])
end
local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[9], ARGV[8])
count_merged(c, ARGV, 11 + chunks)
if chunks > 0 and not staging then
    for i = 11, 10 + chunks do
        count_chunk(c, ARGV[i])
    end
end
return fold_answer(c, KEYS[1], KEYS[2], n)
