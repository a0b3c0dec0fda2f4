-- forget.lua -- removes every key and list entry of one article: its totals, distinct-visitor
-- estimates, hourly and daily buckets, top-list entries and recent-view memory, and takes
-- its share out of the bucket's site totals.
--
-- KEYS[1]  the article's totals hash (it routes the call to the article's slot)
-- ARGV     P tag id window
-- Returns 1 when the article had totals, else 0.

local P, tag, id, window = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local kp = P .. '{' .. tag .. '}'
local METRICS = {'views', 'visitors', 'shares', 'comments'}
local SUMMED = {views = true, shares = true, comments = true} -- kept in site totals
local DAYS, HOURS = 406, 9 * 24 + 1

local function hour_of(t)
    return ymd(math.floor(t / 86400)) .. string.format('%02d', math.floor((t % 86400) / 3600))
end

local now = tonumber(redis.call('TIME')[1])
local today = math.floor(now / 86400)

for _, m in ipairs(METRICS) do
    for d = 0, DAYS - 1 do
        local day = ymd(today - d)
        local key = kp .. 'd:' .. m .. ':' .. day
        local score = redis.call('ZSCORE', key, id)
        if score then
            redis.call('ZREM', key, id)
            if SUMMED[m] then
                redis.call('HINCRBY', kp .. 's:' .. day, m, -tonumber(score))
            end
        end
    end
    for h = 0, HOURS - 1 do
        redis.call('HDEL', kp .. 'h:' .. m .. ':' .. hour_of(now - 3600 * h), id)
    end
    redis.call('ZREM', kp .. 't:' .. m, id)
end

local totals = KEYS[1]
local had = redis.call('EXISTS', totals)
for m in pairs(SUMMED) do
    local n = tonumber(redis.call('HGET', totals, m) or '0')
    if n ~= 0 then
        redis.call('HINCRBY', kp .. 's:all', m, -n)
    end
end
redis.call('DEL', totals, kp .. 'v:' .. ymd(today) .. ':' .. id,
           kp .. 'v:' .. ymd(today - 1) .. ':' .. id)
if window > 0 then
    local slot = math.floor(now / window)
    redis.call('DEL', kp .. 'w:' .. id .. ':' .. slot, kp .. 'w:' .. id .. ':' .. (slot - 1))
end
return had
