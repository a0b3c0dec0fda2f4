-- drain.lua -- one bounded step of what a DELETE folds before it forgets an article (see
-- forget.lua): every journal, of every collector, is folded first, so that no count
-- acknowledged before the DELETE comes back after it. Folded all in one call, thousands of
-- waiting entries would hold Redis for seconds; so the collector calls this, again and again,
-- until little is left, and then forget.lua folds that little and forgets the article in one
-- atomic call.
--
-- A call takes the first journal of the registry that has work: if its staging list holds
-- chunks (see merged.lua), it counts the oldest chunk (at most STEP merged records: chunks are
-- made of STEP records) and removes it; else it folds the journal's oldest entries -- at most
-- COUNT of them and, past the first, no more than BYTES bytes of records (an entry is one
-- write unit, at most 2,000 events) -- counting at most STEP merged records and staging the
-- rest in chunks of STEP, as fold.lua does. Each is removed in the same atomic step as it is
-- counted, so a call sent again after a lost reply counts what is left, never anything twice.
-- Emptied journals leave the registry as after any fold (see journal_left()).
--
-- KEYS[1]  the journals' registry, P{00}r:journals (see ack.lua)
-- ARGV     P model count step bytes
-- Returns {entries folded, staged chunks counted, the buckets touched, commands refused and
-- skipped, the last refusal or "", entries left in every journal of the registry, chunks left
-- in their staging lists} (see fold.lua).

local MEASURE = 16 -- entries read at a time to measure them

-- How many of the oldest entries of JOURNAL fit: at most MAX, the first whatever its size,
-- the others while their records come to BYTES bytes in all.
local function entries_within(journal, max, bytes)
    local n, size, from = 0, 0, '-'
    while n < max do
        local e = redis.call('XRANGE', journal, from, '+', 'COUNT', math.min(MEASURE, max - n))
        for _, x in ipairs(e) do
            for i = 1, #x[2], 2 do
                if x[2][i] == 'a' then
                    size = size + #x[2][i + 1]
                end
            end
            if n > 0 and size > bytes then
                return n
            end
            n = n + 1
        end
        if #e < MEASURE then
            return n
        end
        from = '(' .. e[#e][1]
    end
    return n
end

local c = counter_new(ARGV[1], model_of(ARGV[2]), nil)
local folded, chunks = 0, 0
local journals = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, j in ipairs(journals) do
    local staged = staged_of(ARGV[1], j)
    chunks = count_staged(c, staged, 1)
    if chunks == 0 then
        local n = entries_within(j, tonumber(ARGV[3]), tonumber(ARGV[5]))
        if n > 0 then
            folded = fold_journal(c, j, n, nil, tonumber(ARGV[4]), staged, nil)
        end
    end
    journal_left(j, KEYS[1], staged)
    if chunks > 0 or folded > 0 then
        break -- one journal a call: at most STEP records counted
    end
end
local entries, left = 0, 0
for _, j in ipairs(journals) do
    entries = entries + redis.call('XLEN', j)
    left = left + chunks_left(staged_of(ARGV[1], j))
end
local _, tags = counter_finish(c)
return {folded, chunks, tags, c.errors, c.error or '', entries, left}
