-- view_uniform.lua -- one view per POST, the article drawn uniformly from `articles` (or, with
-- `dist=zipf`, Zipf-like: s = 1, `zipf_s=` to change; a few hot articles take most views).
-- webdis: HINCRBY bench:<article> views 1 per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

bench.run {
    events = 1,
    dist = "uniform",
    tally = function(ctx)
        return bench.post("/v1/events", bench.view_json(ctx.pick()))
    end,
    webdis = function(ctx)
        return bench.get("/HINCRBY/" .. bench.webdis_key(ctx.pick()) .. "/views/1")
    end,
}
