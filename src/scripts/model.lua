-- model.lua -- put before the scripts that take the model argument (cmake/functions.cmake
-- puts it, like dates.lua, before every function body): include/tally/model.h as
-- tally_model_arg() writes it, "<hour ttl> <day ttl> <visitor ttl> <name>[+]...", each name
-- the one of an expiry bit from bit 0 up ("site" for the site totals), '+' after a metric
-- also summed in the site totals. Parsed once per text and kept while the function library
-- is loaded: parsing costs about 6 us, a unit of one view not much more.

local models, n_models = {}, 0

-- The model of TEXT: {hour_ttl, day_ttl, visitors_ttl, bit = {name = bit},
-- site = {metric = true}, metrics = {name...}} (metrics: every name but "site", in bit order).
local function model_of(text)
    local m = models[text]
    if m then
        return m
    end
    local ttl = string.gmatch(text, '%d+')
    m = {hour_ttl = tonumber(ttl()), day_ttl = tonumber(ttl()), visitors_ttl = tonumber(ttl()),
         bit = {}, site = {}, metrics = {}}
    local b = 1
    for name, plus in string.gmatch(text, '([%a_]+)(%+?)') do
        m.bit[name] = b
        b = b * 2
        if name ~= 'site' then
            m.metrics[#m.metrics + 1] = name
            m.site[name] = plus == '+' or nil
        end
    end
    if n_models >= 8 then -- one text per collector version: a few at most
        models, n_models = {}, 0
    end
    models[text] = m
    n_models = n_models + 1
    return m
end
