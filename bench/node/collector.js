// collector.js -- a plain Node.js collector on tally's routes, the reference bench/run.sh
// measures beside tallyd: what one would write in an afternoon with node:http and ioredis.
//
//   node collector.js PORT REDIS_PORT [DATABASE] [PROCESSES]
//
// PROCESSES (default 2) processes share the listening port (node:cluster). Each event is one
// HINCRBY bench:<article> <views|shares|comments> 1; a request of several events runs them as
// one script (EVALSHA) of as many HINCRBYs, as webdis does in the batch scenario. No validation
// beyond what the counting needs, no visitors, no dedupe, no buckets: a floor, not a peer.
//   POST /v1/events             {"type","article"} or an array of them -> {"accepted":N,"ignored":0}
//   POST /v1/events?stats=1     (the embed's view) the same, then one HGETALL per article ->
//                               {"accepted":N,"ignored":0,"articles":[...]}
//   GET  /v1/pixel.gif?type=view&article=ID -> the 43-byte GIF, "Tally-Outcome: counted"
//   GET  /v1/stats/{article}    HGETALL -> {"article","views","shares","comments"}
//   GET  /v1/stats?article=A&article=B...  (the embed's read) one HGETALL per article ->
//                               {"articles":[{"article","views","shares","comments"}, ...]}
//   GET  /healthz               {"status":"ok"}
"use strict";

const cluster = require("node:cluster");
const http = require("node:http");
const Redis = require("ioredis");

const [port, redisPort, db = "2", procs = "2"] = process.argv.slice(2);
if (!port || !redisPort) {
    process.stderr.write("usage: node collector.js PORT REDIS_PORT [DATABASE] [PROCESSES]\n");
    process.exit(2);
}

if (cluster.isPrimary) {
    for (let i = 0; i < Number(procs); i++) cluster.fork();
    cluster.on("exit", () => process.exit(1));
    const stop = () => {
        for (const w of Object.values(cluster.workers)) w.process.kill("SIGTERM");
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    return;
}

const redis = new Redis({ host: "127.0.0.1", port: Number(redisPort), db: Number(db) });
redis.defineCommand("hincrbyAll", {
    lua: "for i, k in ipairs(KEYS) do redis.call('HINCRBY', k, ARGV[i], 1) end return #KEYS",
});

const FIELD = { view: "views", share: "shares", comment: "comments" };
const GIF = Buffer.from("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7", "base64");

function reply(res, status, body, type = "application/json") {
    res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
    res.end(body);
}

function count(events) {
    const keys = [];
    const fields = [];
    for (const e of events) {
        const f = e && typeof e.article === "string" ? FIELD[e.type] : undefined;
        if (!f) return null;
        keys.push("bench:" + e.article);
        fields.push(f);
    }
    if (keys.length === 1) return redis.hincrby(keys[0], fields[0], 1).then(() => 1);
    return redis.hincrbyAll(keys.length, ...keys, ...fields).then(() => keys.length);
}

function stats(article) {
    return redis.hgetall("bench:" + article).then((h) => ({ article, views: Number(h.views || 0),
        shares: Number(h.shares || 0), comments: Number(h.comments || 0) }));
}

function post(req, res, withStats) {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
        let events;
        try {
            events = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
            return reply(res, 400, '{"error":"invalid_json"}\n');
        }
        const list = Array.isArray(events) ? events : [events];
        const p = count(list);
        if (!p) return reply(res, 400, '{"error":"invalid_event"}\n');
        p.then((n) => {
            if (!withStats) return reply(res, 200, `{"accepted":${n},"ignored":0}\n`);
            return Promise.all([...new Set(list.map((e) => e.article))].map(stats)).then(
                (articles) => reply(res, 200, JSON.stringify({ accepted: n, ignored: 0, articles }) + "\n"));
        }).catch(() => reply(res, 503, '{"error":"unavailable"}\n'));
    });
}

http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (req.method === "POST" && url.pathname === "/v1/events") {
        return post(req, res, url.searchParams.get("stats") === "1");
    }
    if (req.method !== "GET") return reply(res, 405, '{"error":"method_not_allowed"}\n');
    if (url.pathname === "/v1/pixel.gif") {
        const p = count([{ type: url.searchParams.get("type"), article: url.searchParams.get("article") }]);
        if (!p) return reply(res, 400, '{"error":"invalid_event"}\n');
        return p.then(
            () => {
                res.writeHead(200, { "Content-Type": "image/gif", "Content-Length": GIF.length,
                    "Cache-Control": "no-store", "Tally-Outcome": "counted" });
                res.end(GIF);
            },
            () => reply(res, 503, '{"error":"unavailable"}\n'),
        );
    }
    if (url.pathname.startsWith("/v1/stats/")) {
        const article = decodeURIComponent(url.pathname.slice("/v1/stats/".length));
        return stats(article).then(
            (st) => reply(res, 200, JSON.stringify(st) + "\n"),
            () => reply(res, 503, '{"error":"unavailable"}\n'),
        );
    }
    if (url.pathname === "/v1/stats") {
        const articles = url.searchParams.getAll("article");
        if (articles.length < 1 || articles.length > 100) {
            return reply(res, 400, '{"error":"invalid_article"}\n');
        }
        return Promise.all(articles.map(stats)).then(
            (list) => reply(res, 200, JSON.stringify({ articles: list }) + "\n"),
            () => reply(res, 503, '{"error":"unavailable"}\n'),
        );
    }
    if (url.pathname === "/healthz") return reply(res, 200, '{"status":"ok"}\n');
    return reply(res, 404, '{"error":"not_found"}\n');
}).listen(Number(port), "127.0.0.1");
