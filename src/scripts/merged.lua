-- merged.lua -- counts the oldest entries of one writer's journal (see ack.lua) from the
-- writer's own merge of them, and removes them, in one atomic step. The writer knows what it
-- appended: it adds up its entries' records per article and hour as their acks come back, so
-- that this script parses no entry and counts each merged record once. It counts them only if
-- the journal starts with exactly the entries the merge holds: a fold sent again after a lost
-- reply, an entry the writer does not know of (an ack whose reply was lost, or one written by
-- anyone else), or entries another collector folded (a DELETE, a reclaim) make it count
-- nothing and answer "stale"; the writer then folds what is left from the journal itself
-- (fold.lua).
--
-- The check reads two entries, however many the batch has. The writer names the first entry
-- A and the last B of its n (their ids, units and numbers, see ack.lua); the journal must
-- start with A, hold B, and their numbers must be n - 1 apart. Why nothing unknown can hide
-- between them then:
--   1. Entries leave a journal only from its start (a fold's trim_journal()) or all at once
--      (DEL by a fold that empties it, or a DELETE); nothing removes one from the middle. A
--      unit appends at most one entry (its attempt marker answers a copy sent again), and its
--      key is unique to it (see unit.lua): the entry holding A's unit is A, appended once.
--   2. A is the journal's first entry, so the journal has not been deleted since A was
--      appended; B was appended after A (the writer sends a unit only once the one before it
--      was answered, and a batch's entries are in the order of their answers), so A and B
--      are of one making of the journal, and no entry appended after A has left it.
--   3. An entry's number is the journal's length plus the entries trimmed from it, just
--      after it was appended (see ack.lua): every XADD to the key raises that sum by one,
--      whoever sends it, and trims leave it as it is, so exactly number(B) - number(A) - 1
--      entries were appended between A and B. The batch's other n - 2 entries were (each was
--      answered after A's and before B was sent), are still there (2.), and are distinct:
--      with n - 1 == number(B) - number(A) they are every entry appended between A and B, and
--      the journal's first n entries are exactly the batch's.
-- Reading the first n entries and comparing the first and the n-th showed the same; this
-- reads two. A caller that does not know the numbers ("") is checked that way still (XRANGE
-- COUNT n).
--
-- A call holds Redis for what it counts, so a large merge is not counted in one: the caller
-- passes records to count here (the collector: a step's worth at most) and chunks, which this
-- call puts, in the same atomic step as the trim, in the writer's staging list (the collector
-- sends one or the other: a merge of more than a step is staged whole); staged.lua
-- then counts them a chunk a call (each removed in the step that counts it). Nothing of the
-- batch is lost or counted twice whichever call's reply is lost: the entries are gone from the
-- journal exactly when their records are counted or staged. While the staging list holds
-- chunks, this script and fold.lua count nothing and answer "staged": the writer counts its
-- chunks first (a property's latest value must not be overwritten by an older one).
--
-- KEYS[1]  the journal, P{00}q:<writer>
-- KEYS[2]  the journals' registry (see ack.lua)
-- KEYS[3]  the writer's staging list, P{00}c:<writer> (see journal.lua)
-- ARGV     P model n first last first_unit last_unit first_number last_number hour fresh
--          nchunks chunk... record...
--          n entries, the ids, the units and the numbers (see ack.lua; "": not known) of
--          the first and the last: the oldest n of the journal; hour and fresh: the bucket
--          keys of that hour and its day that may be new (see counter_new); each chunk:
--          records as staged.lua reads them; each record: time (Unix seconds: its hour) and
--          the record as count.lua reads it
-- Returns {"stale"}, {"staged"}, or {entries folded, entries left, the buckets touched,
-- commands Redis refused and skipped, the last refusal or "", the keys whose expiry it set,
-- chunks staged} as fold.lua
-- does.

if redis.call('EXISTS', KEYS[3]) == 1 then
    return {'staged'}
end
local n = tonumber(ARGV[3])
if not journal_starts_with(KEYS[1], n, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]) then
    return {'stale'}
end
local chunks = tonumber(ARGV[12])
-- A Redis user from before staging (its ACL without RPUSH and LPOP) may not stage: then this
-- call counts the chunks too, after the records, as a fold did before it was made in steps.
local staging = chunks > 0 and may_stage(KEYS[3])
-- As in fold_journal(): trimmed before anything is counted, which cannot stop half-way.
trim_journal(KEYS[1], ARGV[5])
if staging then
    stage(KEYS[3], {unpack(ARGV, 13, 12 + chunks)}, KEYS[1], KEYS[2])
end
local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[11], ARGV[10])
count_merged(c, ARGV, 13 + chunks)
if chunks > 0 and not staging then
    for i = 13, 12 + chunks do
        count_chunk(c, ARGV[i])
    end
end
return fold_answer(c, KEYS[1], KEYS[2], n)
