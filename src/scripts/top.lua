-- top.lua -- one bucket's top list of one day or of all time (rank.lua): read only.
--
-- KEYS   the bucket's sorted set of the day, or of all time
-- ARGV   limit
-- Returns a flat {article, score, ...} of at most LIMIT positive scores, in no particular
-- order.

return rank(KEYS, tonumber(ARGV[1]))
