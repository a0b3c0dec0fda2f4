-- embed.lua -- page views as the embed (src/assets/tally.js) makes them on an article page
-- that shows its own counts: one POST to /v1/events?stats=1 of
-- {"type":"view","article":A,"words":W} as text/plain, whose 200 carries the article's counts,
-- its view included, for the page to show. Articles are Zipf-like (s = 1, `dist=uniform` or
-- `zipf_s=` to change); `words=0` leaves the reading length out of the view (the embed sends
-- it whenever the page has text). Events are the views the 200s acknowledged: events/s is page
-- views/s.
--
-- Left out of each page view: the engage events (a POST when the page is hidden or left, and
-- one a minute while it stays in view, so after the reading and not in the page's first
-- second), the /v1/live stream (data-live only), other articles' counts (a GET /v1/stats of
-- those the page names) and tally.js itself (a cached file).
--
-- webdis: HINCRBY bench:<article> views 1, whose answer is the article's new count.
-- node: the same POST; the collector counts, then reads the article's hash for its answer.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

-- A page's reading length, as tally.js counts it: a fixed number per article.
local function words(n)
    return 300 + (n * 7919) % 1700
end

bench.run {
    events = 1,
    dist = "zipf",
    tally = function(ctx)
        local n = ctx.pick()
        local body = '{"type":"view","article":"' .. bench.article_id(n) .. '"'
        if ctx.opt.words ~= "0" then
            body = body .. ',"words":' .. words(n)
        end
        return bench.post("/v1/events?stats=1", body .. "}", nil, "text/plain;charset=UTF-8")
    end,
    webdis = function(ctx)
        return bench.get("/HINCRBY/" .. bench.webdis_key(ctx.pick()) .. "/views/1")
    end,
}
