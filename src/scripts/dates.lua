-- dates.lua -- put before the scripts that file counts by UTC day (cmake/embed.cmake joins
-- them): Redis scripts cannot include one another.

-- The civil date of a day number (days since 1970-01-01), as YYYYMMDD (H. Hinnant's
-- days_from_civil, inverted).
local function ymd(days)
    local z = days + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                            - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400 + (m <= 2 and 1 or 0)
    return string.format('%04d%02d%02d', y, m, d)
end

