-- journal.lua -- put before fold.lua, reclaim.lua, forget.lua and the cluster's cplan.lua and
-- cpart.lua (cmake/functions.cmake puts it before every function body): folding a writer's
-- journal (see ack.lua) into the counters.

-- Split S at "\n" into a list. (Counted as it grows: t[#t + 1] costs a quarter more per token,
-- and a staged chunk of 128 records has about 1,100.)
local function tokens(s)
    local t, n = {}, 0
    for x in string.gmatch(s, '[^\n]+') do
        n = n + 1
        t[n] = x
    end
    return t
end

-- The id just after stream id ID ("ms-seq"), for XTRIM MINID.
local function next_id(id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end

-- The digits D of a number without its leading zeros ("" for 0), and whether number X is
-- below number Y, both so written: compared by length, then as text.
local function digits(d)
    return (string.gsub(d, '^0+', ''))
end
local function digits_below(x, y)
    if #x ~= #y then
        return #x < #y
    end
    return x < y
end

-- Is stream id A ("ms-seq") before stream id B? Compared as numbers, the ms first, then the
-- seq ("9-0" is before "10-0"), as digit strings of any length: exact where a Lua number
-- (a double) is not, and never as text. An id without "-seq" is "ms-0".
local function id_before(a, b)
    local am, as = string.match(a, '^(%d+)-?(%d*)$')
    local bm, bs = string.match(b, '^(%d+)-?(%d*)$')
    am, bm = digits(am), digits(bm)
    if am ~= bm then
        return digits_below(am, bm)
    end
    return digits_below(digits(as), digits(bs))
end

-- Redis's clock in Unix ms.
local function redis_ms()
    local clock = redis.call('TIME')
    return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

-- The count of JOURNAL's (P{jj}q:<writer>) entries that folds trimmed since it was made:
-- P{jj}n:<writer>, a hash (field n), deleted with the journal. With the journal's length it
-- numbers each entry as it is appended (see ack.lua). jj, the journal's hash tag, is taken
-- from its name: {00} on one Redis, a bucket of a master of its own on a cluster.
local function trimmed_of(journal)
    local P, tag, writer = string.match(journal, '^(.-)(%b{})q:(.*)$')
    return P .. tag .. 'n:' .. writer
end

-- The number of the next entry appended to JOURNAL -- one more than the entries it has taken
-- since it was made (those in it and those trimmed) -- and the id to append it at: "*"
-- (Redis's clock), or the id just past the journal's high-water mark. A cluster journal's
-- trimmed count holds that mark, its field h, the last id its plans trimmed (cplan.lua), and
-- keeps it when the journal is dropped (cdrop.lua): buckets' cursors compare ids, so a journal
-- made anew (dropped by a reclaimer while its writer lived, see cdrop.lua) must number its
-- entries past every id a cursor may hold, even on a master whose clock is behind the one
-- that made the old journal's ids (a failover to a replica with a slower clock, a clock
-- step). CLOCK is Redis's time (Unix ms). Two commands of constant cost, neither reading an
-- entry; a third (EXISTS) at the first append to a cluster journal a fold emptied, and a
-- fourth when the journal is made anew over a kept mark (the mark goes: the new journal's
-- trims write it again, with no expiry).
local function journal_next(journal, clock)
    local len = redis.call('XLEN', journal)
    local trimmed = trimmed_of(journal)
    local t = redis.call('HMGET', trimmed, 'n', 'h')
    local at, high = '*', t[2]
    if high and len == 0 and redis.call('EXISTS', journal) == 0 then
        redis.call('DEL', trimmed)
        t[1] = false
        if not id_before(high, string.format('%d-0', clock)) then
            at = next_id(high)
        end
    end
    return len + 1 + (tonumber(t[1]) or 0), at
end

-- Remove JOURNAL's entries up to the id LAST and count them as trimmed: every trim of a
-- journal goes through here (see journal_next()).
local function trim_journal(journal, last)
    local n = redis.call('XTRIM', journal, 'MINID', next_id(last))
    if n > 0 then
        redis.call('HINCRBY', trimmed_of(journal), 'n', n)
    end
end

-- The value of FIELD in stream entry E (as XRANGE gives it), or nil.
local function entry_field(e, name)
    for i = 1, #e[2], 2 do
        if e[2][i] == name then
            return e[2][i + 1]
        end
    end
    return nil
end

-- Does JOURNAL start with exactly the N entries a writer merged, the first FIRST and the last
-- LAST (ids), of units FIRST_U and LAST_U and numbered FIRST_S and LAST_S (see ack.lua; ""
-- when not known)? Reads two entries whatever N: why that suffices is in merged.lua. Without
-- the numbers it reads the first N.
local function journal_starts_with(journal, n, first, last, first_u, last_u, first_s, last_s)
    local head = redis.call('XRANGE', journal, '-', '+', 'COUNT', 1)[1]
    if not head or head[1] ~= first or entry_field(head, 'u') ~= first_u then
        return false
    end
    if first_s ~= '' and last_s ~= '' then
        local e = redis.call('XRANGE', journal, last, last)[1]
        return e ~= nil and entry_field(e, 'u') == last_u and entry_field(head, 's') == first_s and
                   entry_field(e, 's') == last_s and tonumber(last_s) - tonumber(first_s) == n - 1
    end
    local e = redis.call('XRANGE', journal, '-', '+', 'COUNT', n)
    return #e == n and e[n][1] == last and entry_field(e[n], 'u') == last_u
end

-- The staging list of JOURNAL (P{jj}q:<writer>): P{jj}c:<writer>, the chunks of merged
-- records a merged fold took from the journal and left to be counted (see merged.lua). A
-- journal stays in the registry, even emptied, while its staging list holds chunks, so that
-- whoever folds the journal finds them; they are counted before any entry still in it
-- (they are older). (Only one Redis stages: jj is 00 there.)
local function staged_of(P, journal)
    return P .. string.sub(journal, #P + 1, #P + 4) .. 'c:' .. string.sub(journal, #P + 7)
end

-- Count with counter C the merged records in the list T from position POS on: per record the
-- Unix time of its hour, then the record as count.lua reads it (a merged fold's arguments).
local function count_merged(c, t, pos)
    local at, day, hour
    local r = {} -- each record read into it, counted and forgotten
    local n = #t
    while pos <= n do
        if t[pos] ~= at then
            at = t[pos]
            day, hour = day_hour(tonumber(at))
        end
        r, pos = read_record(t, pos + 1, r)
        count_record(c, r, day, hour)
    end
end

-- Count one chunk of merged records (text: the tokens of count_merged()'s list joined by
-- "\n") with counter C.
local function count_chunk(c, chunk)
    count_merged(c, tokens(chunk), 1)
end

-- Count and remove the oldest MAX chunks of the staging list STAGED (every one, MAX nil) with
-- counter C: each is removed in the step that counts it, so a call sent again counts the next
-- chunk or none. Returns the chunks counted.
local function count_staged(c, staged, max)
    local n = 0
    -- Nothing staged, nothing to pop: a Redis user from before staging may not LPOP.
    if redis.call('EXISTS', staged) == 0 then
        return 0
    end
    while not max or n < max do
        local chunk = redis.call('LPOP', staged)
        if not chunk then
            break
        end
        count_chunk(c, chunk)
        n = n + 1
    end
    return n
end

-- The tokens of record R (as read_record() gives it) appended to list T, as count.lua reads
-- them.
local function put_record(t, r)
    local n = #t
    local function put(x)
        n = n + 1
        t[n] = x
    end
    put(r.tag)
    put(r.id)
    put(r.views)
    put(#r.vis)
    for _, v in ipairs(r.vis) do
        put(v)
    end
    put(#r.nets)
    for _, k in ipairs(r.nets) do
        put(k)
        put(r.shares[k])
    end
    put(#r.comments)
    for _, d in ipairs(r.comments) do
        put(d)
    end
    put(#r.mets)
    for _, k in ipairs(r.mets) do
        put(k)
        put(r.sums[k])
    end
    put(#r.fields)
    for _, k in ipairs(r.fields) do
        put(k)
        put(r.props[k])
    end
end

-- The chunks waiting in the staging list STAGED (LLEN only when it exists: a Redis user from
-- before staging may not LLEN, and has never staged).
local function chunks_left(staged)
    if redis.call('EXISTS', staged) == 0 then
        return 0
    end
    return redis.call('LLEN', staged)
end

-- May the caller stage chunks in STAGED? (An ACL from before staging may not: then a fold
-- counts everything itself, as it did.)
local function may_stage(staged)
    return redis.acl_check_cmd('RPUSH', staged, 'x') and redis.acl_check_cmd('LPOP', staged)
end

-- Put the chunks CHUNKS (texts) at the end of the staging list STAGED of JOURNAL. With
-- REGISTRY, the journal counts as written to now: its live writer counts them next, and
-- reclaim.lua leaves them to it unless it goes.
local function stage(staged, chunks, journal, registry)
    if #chunks == 0 then
        return
    end
    redis.call('RPUSH', staged, unpack(chunks))
    if registry then
        local clock = redis.call('TIME')
        redis.call('ZADD', registry,
                   tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000), journal)
    end
end

-- The records of journal entries ENTRIES (as XRANGE gives them) merged per hour and article,
-- so that an article viewed a thousand times in the window costs the commands of one view:
-- MERGED (key -> record, as read_record() gives it, its time the Unix time of the first entry
-- that had it: the hour it is filed in) and ORDER (their keys, in the order of their first
-- entry). Comment deltas are kept in order; an entry with "c 1" has its views resolved here
-- (each visitor not repeated is a view, see ack.lua). Every fold of entries merges through
-- here (fold_journal(), cplan.lua), so one plan read by anyone gives the same records.
local function merge_entries(entries)
    local merged, order = {}, {}
    for _, e in ipairs(entries) do
        local f = e[2]
        local now, records, checked, repeats
        for i = 1, #f, 2 do
            if f[i] == 'n' then
                now = tonumber(f[i + 1])
            elseif f[i] == 'a' then
                records = f[i + 1]
            elseif f[i] == 'c' then
                checked = f[i + 1] == '1'
            elseif f[i] == 'r' then
                repeats = f[i + 1]
            end
        end
        local hour = math.floor(now / 3600)
        local t = tokens(records)
        local pos = 1
        -- With checked views, each visitor not repeated is a view (see ack.lua); an entry
        -- without "c" has its views resolved already.
        local rep, seen = {}, 0
        if checked then
            for p in string.gmatch(repeats, '%d+') do
                rep[tonumber(p)] = true
            end
        end
        while pos <= #t do
            local r
            r, pos = read_record(t, pos)
            if checked then
                for i = 1, #r.vis do
                    if not rep[seen + i] then
                        r.views = r.views + 1
                    end
                end
                seen = seen + #r.vis
            end
            local k = hour .. ' ' .. r.tag .. r.id
            local m = merged[k]
            if m then
                merge_record(m, r)
            else
                r.time = now
                merged[k] = r
                order[#order + 1] = k
            end
        end
    end
    return merged, order
end

-- Count the first COUNT entries of JOURNAL (or every entry, COUNT nil) -- of those before
-- the id BEFORE, if given -- with counter C and remove them. Their records are merged per
-- article and hour first (merge_entries()); records are counted in the order of their first
-- entry, comment deltas kept in order. With STEP, at most STEP merged records are counted
-- here and the rest staged in STAGED, STEP a chunk (see merged.lua; REGISTRY as in stage());
-- STEP nil counts them all. Returns the entries folded.
local function fold_journal(c, journal, count, before, step, staged, registry)
    local last = before and '(' .. before or '+'
    local entries
    if count then
        entries = redis.call('XRANGE', journal, '-', last, 'COUNT', count)
    else
        entries = redis.call('XRANGE', journal, '-', last)
    end
    if #entries == 0 then
        return 0
    end
    local merged, order = merge_entries(entries)
    -- Trimmed after everything was read and before anything is counted: Redis does not undo
    -- what a script wrote before an error, so an entry it cannot read stops the fold with
    -- nothing written, and a trim refused (an ACL without XTRIM) stops it before any count --
    -- never counted entries left to be counted again. The counting cannot stop half-way (see
    -- counter_new).
    if step and #order > step and not may_stage(staged) then
        step = nil
    end
    trim_journal(journal, entries[#entries][1])
    if step and #order > step then
        local chunks = {}
        for i = step + 1, #order, step do
            local t = {}
            for j = i, math.min(i + step - 1, #order) do
                local r = merged[order[j]]
                t[#t + 1] = r.time
                put_record(t, r)
            end
            chunks[#chunks + 1] = table.concat(t, '\n')
        end
        stage(staged, chunks, journal, registry)
    end
    for i = 1, step and math.min(step, #order) or #order do
        local r = merged[order[i]]
        local day, hour = day_hour(r.time)
        count_record(c, r, day, hour)
    end
    return #entries
end

-- Fold every journal in the registry REGISTRY completely, its staged chunks first, and forget
-- them: before anything reads or removes counts that must hold everything acknowledged.
local function fold_all(c, registry)
    for _, j in ipairs(redis.call('ZRANGE', registry, 0, -1)) do
        local staged = staged_of(c.P, j)
        count_staged(c, staged, nil)
        fold_journal(c, j, nil)
        redis.call('DEL', j, staged, trimmed_of(j))
        redis.call('ZREM', registry, j)
    end
end

-- The entries left in JOURNAL. An emptied journal whose staging list STAGED is empty too is
-- deleted (with its count of trimmed entries) and taken out of REGISTRY (its writer's next entry starts both again), so nothing
-- stays behind.
local function journal_left(journal, registry, staged)
    local left = redis.call('XLEN', journal)
    if left == 0 and redis.call('EXISTS', staged) == 0 then
        redis.call('DEL', journal, trimmed_of(journal))
        redis.call('ZREM', registry, journal)
    end
    return left
end

-- The answer of a fold of JOURNAL (in REGISTRY) that counted N entries (or chunks) with
-- counter C: {N, entries left, the buckets touched, commands Redis refused and skipped, the
-- last refusal or "", the keys whose expiry it set where the collector's list spoke of them,
-- chunks left in its staging list}.
local function fold_answer(c, journal, registry, n)
    local expired, tags = counter_finish(c)
    local staged = staged_of(c.P, journal)
    local left = journal_left(journal, registry, staged)
    return {n, left, tags, c.errors, c.error or '', expired, chunks_left(staged)}
end
