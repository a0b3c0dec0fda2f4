-- cplan.lua -- the journal's side of a fold on a Redis Cluster: finishes the plan the caller
-- counted and plans the next, in one atomic step in the journal's slot. A plan is a range of
-- the journal's oldest entries, "<first id> <last id> <entries>", kept in P{jj}p:<writer>
-- until every bucket it touches has counted its part (cpart.lua, one call in each bucket's
-- slot: a script touches one slot). Its entries are trimmed only then, and a new plan is made
-- only after the trim, so in each bucket the plans of a journal are counted in journal order
-- and a bucket's cursor (the last id of the last plan it counted) is never inside a plan: a
-- part sent again finds the cursor at its last id and counts nothing.
--
-- KEYS[1]  the journal, P{jj}q:<writer> (see ack.lua)
-- KEYS[2]  the plan, P{jj}p:<writer>, a string "<first id> <last id> <entries>"
-- KEYS[3]  the journal's trimmed count, P{jj}n:<writer> (see trimmed_of())
-- ARGV     P model count done_first done_last [upto [n first last first_unit last_unit
--          first_number last_number]]
--          count: the most entries a new plan takes (at least 1); done_first and done_last:
--          the first and last id of the plan whose every part the caller has had answered
--          (counted or "done"), "" for none. When the stored plan is exactly that one, its
--          entries are trimmed (trim_journal()), its last id becomes the journal's
--          high-water mark (field h of KEYS[3], see journal_next()) and the plan is deleted;
--          a plan that differs --
--          another folder finished it and planned anew -- is left as it is. upto (""
--          or absent: none): a bucket's cursor that a part found inside the plan
--          (cpart.lua's "overlap", after the journal's master failed over): the plan then
--          ends at the last entry at or before it (a stored plan that goes past it is made
--          again), which that bucket has counted and the others count.
--          The journal's own writer may add n first last first_unit last_unit first_number
--          last_number (see merged.lua): the entries it merged itself as their acks came
--          back. When no plan is stored, no upto is given and the journal (after the trim)
--          starts with exactly those entries (journal_starts_with()), they are the new plan
--          and this script reads none of their records: the caller counts each bucket's part
--          from its own merge, which holds the records merge_entries() would make of them
--          (the single-Redis merged.lua relies on the same). Otherwise the plan is made as
--          without them.
-- Returns {"empty", entries in the journal} when there is nothing to plan; {first, last, n,
--   left, -1} for a plan of the caller's merge; else
--   {first, last, n, left, nparts, tag1, chunk1, tag2, chunk2, ...}: the plan (stored or new:
--   the oldest count entries), the entries left in the journal after the trim (the plan's
--   included), and per bucket the plan touches, in the order of first appearance, its tag and
--   its merged records (merge_entries(), as a fold from the journal merges them) as a staged
--   chunk holds them: per record the Unix time of its hour, then its tokens as count.lua reads
--   them, all joined by "\n" (cpart.lua counts it with count_chunk()). The same plan read by
--   anyone gives the same parts.

local journal, key = KEYS[1], KEYS[2]
local plan = redis.call('GET', key)
if ARGV[5] ~= '' and plan then
    local first, last = string.match(plan, '^(%S+) (%S+) ')
    if first == ARGV[4] and last == ARGV[5] then
        trim_journal(journal, last)
        redis.call('HSET', KEYS[3], 'h', last) -- the high-water mark (see journal_next())
        redis.call('DEL', key)
        plan = false
    end
end
local upto = ARGV[6] ~= '' and ARGV[6] or nil
local first, last, n, entries
if plan then
    first, last, n = string.match(plan, '^(%S+) (%S+) (%d+)$')
    if upto and id_before(upto, last) then
        plan = false -- made again, to end at upto
    else
        entries = redis.call('XRANGE', journal, first, last)
        n = tonumber(n)
        if #entries == 0 then -- its entries gone (nothing in tally removes them but the trim)
            plan = false
        end
    end
    if not plan then
        redis.call('DEL', key)
    end
end
if not plan and not upto and ARGV[7] and ARGV[7] ~= '' then
    n = tonumber(ARGV[7])
    if journal_starts_with(journal, n, ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12],
                           ARGV[13]) then
        redis.call('SET', key, ARGV[8] .. ' ' .. ARGV[9] .. ' ' .. ARGV[7])
        return {ARGV[8], ARGV[9], n, redis.call('XLEN', journal), -1}
    end
end
if not plan then
    local count = math.max(tonumber(ARGV[3]) or 1, 1)
    entries = upto and redis.call('XRANGE', journal, '-', upto, 'COUNT', count) or {}
    if #entries == 0 then -- no upto, or nothing at or before it left: the oldest entries
        entries = redis.call('XRANGE', journal, '-', '+', 'COUNT', count)
    end
    if #entries == 0 then
        return {'empty', redis.call('XLEN', journal)}
    end
    first, last, n = entries[1][1], entries[#entries][1], #entries
    redis.call('SET', key, first .. ' ' .. last .. ' ' .. string.format('%d', n))
end
local merged, order = merge_entries(entries)
local parts, tags = {}, {}
for _, k in ipairs(order) do
    local r = merged[k]
    local t = parts[r.tag]
    if not t then
        t = {}
        parts[r.tag] = t
        tags[#tags + 1] = r.tag
    end
    t[#t + 1] = string.format('%d', r.time)
    put_record(t, r)
end
local answer = {first, last, n, redis.call('XLEN', journal), #tags}
for _, tag in ipairs(tags) do
    answer[#answer + 1] = tag
    answer[#answer + 1] = table.concat(parts[tag], '\n')
end
return answer
