-- stats.lua -- GET /v1/stats/{article}: cold = an article drawn uniformly from `articles`
-- (most never cached), hot = `hot=1`, always the same article. Reads count nothing.
-- webdis: HGET bench:<article> views per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

bench.run {
    events = 1,
    dist = "uniform",
    tally = function(ctx)
        return bench.get("/v1/stats/" .. bench.article_path(ctx.pick()))
    end,
    tally_count = function()
        return 0, 0
    end,
    webdis = function(ctx)
        return bench.get("/HGET/" .. bench.webdis_key(ctx.pick()) .. "/views")
    end,
}
