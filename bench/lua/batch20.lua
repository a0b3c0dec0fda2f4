-- batch20.lua -- a batch of 20 events per POST, articles Zipf-like; every 5th event is a
-- share (networks in turn), the others views: 16 views + 4 shares per request.
-- webdis has no batches of its own: each request is one EVALSHA of a script that runs 20
-- HINCRBYs (KEYS: the 20 articles' hashes, ARGV: views or shares), the same work per request
-- as the batch; run.sh loads the script and passes its SHA1 as sha=.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local BATCH = 20
local nets = bench.NETWORKS

bench.run {
    events = BATCH,
    webdis_events = BATCH,
    dist = "zipf",
    tally = function(ctx)
        local ev = {}
        for i = 1, BATCH do
            local n = ctx.pick()
            if i % 5 == 0 then
                ev[i] = bench.share_json(n, nets[(ctx.seq + i) % #nets + 1])
            else
                ev[i] = bench.view_json(n)
            end
        end
        return bench.post("/v1/events", "[" .. table.concat(ev, ",") .. "]")
    end,
    webdis = function(ctx)
        local keys, fields = {}, {}
        for i = 1, BATCH do
            keys[i] = bench.webdis_key(ctx.pick())
            fields[i] = (i % 5 == 0) and "shares" or "views"
        end
        return bench.get("/EVALSHA/" .. ctx.opt.sha .. "/" .. BATCH .. "/" .. table.concat(keys, "/")
            .. "/" .. table.concat(fields, "/"))
    end,
}
