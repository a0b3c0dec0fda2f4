-- healthz.lua -- GET /healthz: the HTTP layer alone (parse, route, a fixed answer), against
-- nginx's fixed answer on the same path. webdis: PING.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

bench.run {
    events = 1,
    tally = function()
        return bench.get("/healthz")
    end,
    tally_count = function()
        return 0, 0
    end,
    webdis = function()
        return bench.get("/PING")
    end,
}
