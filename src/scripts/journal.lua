-- journal.lua -- put before fold.lua, reclaim.lua and forget.lua (cmake/functions.cmake puts
-- it before every function body): folding a writer's journal (see ack.lua) into the counters.

-- Split S at "\n" into a list.
local function tokens(s)
    local t = {}
    for x in string.gmatch(s, '[^\n]+') do
        t[#t + 1] = x
    end
    return t
end

-- The id just after stream id ID ("ms-seq"), for XTRIM MINID.
local function next_id(id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end

-- Count the first COUNT entries of JOURNAL (or every entry, COUNT nil) -- of those before
-- the id BEFORE, if given -- with counter C and remove them. Their records are merged per
-- article and hour first, so an article viewed a thousand times in the window costs the
-- commands of one view; records are counted in the order of their first entry, comment
-- deltas kept in order. Returns the entries folded.
local function fold_journal(c, journal, count, before)
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
    -- Trimmed after everything was read and before anything is counted: Redis does not undo
    -- what a script wrote before an error, so an entry it cannot read stops the fold with
    -- nothing written, and a trim refused (an ACL without XTRIM) stops it before any count --
    -- never counted entries left to be counted again. The counting cannot stop half-way (see
    -- counter_new).
    redis.call('XTRIM', journal, 'MINID', next_id(entries[#entries][1]))
    for _, k in ipairs(order) do
        local r = merged[k]
        local day, hour = day_hour(r.time)
        count_record(c, r, day, hour)
    end
    return #entries
end

-- Fold every journal in the registry REGISTRY completely, and forget the empty ones: before
-- anything reads or removes counts that must hold everything acknowledged.
local function fold_all(c, registry)
    for _, j in ipairs(redis.call('ZRANGE', registry, 0, -1)) do
        fold_journal(c, j, nil)
        redis.call('DEL', j)
        redis.call('ZREM', registry, j)
    end
end

-- The entries left in JOURNAL. An emptied journal is deleted and taken out of REGISTRY (its
-- writer's next entry starts both again), so nothing stays behind.
local function journal_left(journal, registry)
    local left = redis.call('XLEN', journal)
    if left == 0 then
        redis.call('DEL', journal)
        redis.call('ZREM', registry, journal)
    end
    return left
end

-- The answer of a fold of JOURNAL (in REGISTRY) that counted N entries with counter C: {N,
-- entries left, the buckets touched, commands Redis refused and skipped, the last refusal or
-- "", the keys whose expiry it set where the collector's list spoke of them}.
local function fold_answer(c, journal, registry, n)
    local expired, tags = counter_finish(c)
    local left = journal_left(journal, registry)
    return {n, left, tags, c.errors, c.error or '', expired}
end
