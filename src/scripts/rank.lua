-- rank.lua -- one bucket's top list: the first LIMIT articles by score descending, then by
-- article id ascending (bytewise, as a sorted set orders equal scores), so that the collector
-- can merge the buckets into an exact answer in the same order. At most LIMIT come back,
-- however many share the edge score. top.lua answers with it, kept.lua keeps what it answers;
-- forget.lua and import.lua make what kept.lua keeps of a bucket stale (kept_stale).
--
-- keys     sorted sets of one bucket: one day, or the days of a week or month (summed), or the
--          all-time list
-- Returns a flat {article, score, ...} of at most LIMIT positive scores, in no particular
-- order.
local function rank(keys, limit)
    local out = {}

    local function keep(member, score)
        if tonumber(score) > 0 then
            out[#out + 1] = member
            out[#out + 1] = score
        end
    end

    if #keys == 1 then
        local desc = redis.call('ZREVRANGE', keys[1], 0, limit - 1, 'WITHSCORES')
        if #desc < 2 * limit then
            for i = 1, #desc, 2 do
                keep(desc[i], desc[i + 1])
            end
            return out
        end
        local edge = desc[#desc]
        for i = 1, #desc, 2 do
            if tonumber(desc[i + 1]) > tonumber(edge) then
                keep(desc[i], desc[i + 1])
            end
        end
        -- Those above the edge, then the first of the edge score by id to fill the list.
        local above = #out / 2
        local ties = redis.call('ZRANGEBYSCORE', keys[1], edge, edge, 'WITHSCORES', 'LIMIT', 0,
                                limit - above)
        for i = 1, #ties, 2 do
            keep(ties[i], ties[i + 1])
        end
        return out
    end

    -- ZUNION answers by score ascending, equal scores by id ascending: the top is at the end.
    local args = {'ZUNION', #keys}
    for i = 1, #keys do
        args[#args + 1] = keys[i]
    end
    args[#args + 1] = 'WITHSCORES'
    local asc = redis.call(unpack(args))
    local n = #asc / 2
    if n <= limit then
        for i = 1, n do
            keep(asc[2 * i - 1], asc[2 * i])
        end
        return out
    end
    -- The run of the edge score (the LIMIT-th highest) is first..last; above it, last+1..n.
    local edge = tonumber(asc[2 * (n - limit + 1)])
    local first, last = n - limit + 1, n - limit + 1
    while first > 1 and tonumber(asc[2 * (first - 1)]) == edge do
        first = first - 1
    end
    while last < n and tonumber(asc[2 * (last + 1)]) == edge do
        last = last + 1
    end
    for i = last + 1, n do
        keep(asc[2 * i - 1], asc[2 * i])
    end
    for i = first, first + limit - (n - last) - 1 do
        keep(asc[2 * i - 1], asc[2 * i])
    end
    return out
end

-- What kept.lua keeps of the bucket whose keys begin with KP ("P{bb}") is stale: its counts of
-- past days changed. The epoch outlives every answer kept under the one before (60 s) by far,
-- and goes a day after its last change: back at 0, no answer of an earlier 0 is kept still.
-- GET and SET, not INCR: a Redis user from before kept answers may run it.
local function kept_stale(kp)
    local key = kp .. 'k:epoch'
    redis.call('SET', key, string.format('%d', (tonumber(redis.call('GET', key)) or 0) + 1),
               'EX', 86400)
end
