-- pixel.lua -- GET /v1/pixel.gif?type=view&article=ID (pages without JavaScript), articles
-- Zipf-like. A counted pixel says "Tally-Outcome: counted" (the body is always the GIF).
-- webdis: HINCRBY bench:<article> views 1 per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

bench.run {
    events = 1,
    dist = "zipf",
    tally = function(ctx)
        return bench.get("/v1/pixel.gif?type=view&article=" .. bench.article_path(ctx.pick()))
    end,
    tally_count = function(_, headers)
        local o = headers["Tally-Outcome"] or headers["tally-outcome"]
        if o == "counted" then
            return 1, 0
        end
        return 0, 1
    end,
    webdis = function(ctx)
        return bench.get("/HINCRBY/" .. bench.webdis_key(ctx.pick()) .. "/views/1")
    end,
}
