-- dedupe.lua -- one view per POST with repeat detection on (tallyd --view-window 1800
-- --trust-proxy 127.0.0.1): each request carries an X-Forwarded-For, so visitors vary.
-- visitors=0: a new address on every request (no repeats); visitors=N: an address drawn
-- uniformly from N, so a visitor sometimes views the same (Zipf-hot) article again, and tally
-- answers such a view with "ignored" (repeat). The count check uses the answers' "accepted".
-- webdis: HINCRBY bench:<article> views 1 per request (no dedupe).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local function ip(v)
    return string.format("%d.%d.%d.%d", 11 + math.floor(v / 16777216) % 200,
        math.floor(v / 65536) % 256, math.floor(v / 256) % 256, v % 256)
end

bench.run {
    events = 1,
    dist = "zipf",
    tally = function(ctx)
        local pool = tonumber(ctx.opt.visitors or "0")
        local v
        if pool > 0 then
            v = math.random(pool) - 1
        else
            v = (ctx.thread_id - 1) * 16777216 + ctx.seq
        end
        return bench.post("/v1/events", bench.view_json(ctx.pick()),
            "X-Forwarded-For: " .. ip(v) .. "\r\n")
    end,
    webdis = function(ctx)
        return bench.get("/HINCRBY/" .. bench.webdis_key(ctx.pick()) .. "/views/1",
            "X-Forwarded-For: 11.0.0.1\r\n")
    end,
}
