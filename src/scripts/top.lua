-- top.lua -- one bucket's top list: every article whose score is at least the LIMIT-th
-- highest, so that ties at the edge are all there and the collector can merge the buckets
-- into an exact answer (count descending, then article id ascending).
--
-- KEYS   sorted sets of one bucket: one day, or the days of a week or month (summed), or the
--        all-time list
-- ARGV   limit
-- Returns a flat {article, score, ...} of positive scores, in no particular order.

local limit = tonumber(ARGV[1])
local out = {}

local function keep(member, score)
    if tonumber(score) > 0 then
        out[#out + 1] = member
        out[#out + 1] = score
    end
end

if #KEYS == 1 then
    local desc = redis.call('ZREVRANGE', KEYS[1], 0, limit - 1, 'WITHSCORES')
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
    local ties = redis.call('ZRANGEBYSCORE', KEYS[1], edge, edge, 'WITHSCORES')
    for i = 1, #ties, 2 do
        keep(ties[i], ties[i + 1])
    end
    return out
end

-- ZUNION answers in ascending order: the top is at the end.
local args = {'ZUNION', #KEYS}
for i = 1, #KEYS do
    args[#args + 1] = KEYS[i]
end
args[#args + 1] = 'WITHSCORES'
local asc = redis.call(unpack(args))
local n = #asc / 2
local first = 1
if n > limit then
    local edge = tonumber(asc[2 * (n - limit + 1)])
    first = n - limit + 1
    while first > 1 and tonumber(asc[2 * (first - 1)]) >= edge do
        first = first - 1
    end
end
for i = first, n do
    keep(asc[2 * i - 1], asc[2 * i])
end
return out
