/* tally.js -- counts one view of this page and shows its numbers; see tallyd's README. */
(function () {
  'use strict';
  var d = document, s = d.currentScript, w = window;
  if (!s || !s.src || w.__tally) return;
  w.__tally = 1;

  var base = s.src.replace(/[?#].*$/, '').replace(/[^\/]*$/, '');
  var page = '';  // this page's article: read in start(), once <link rel=canonical> is parsed
  var compactAll = s.getAttribute('data-format') === 'compact';
  var liveOn = s.hasAttribute('data-live') && s.getAttribute('data-live') !== 'false';
  // article -> {views:..., ...} as last rendered. A Map, never a plain object: ids come from
  // the page ("__proto__", "constructor") and must not reach Object.prototype.
  var shown = new Map();
  var has = Object.prototype.hasOwnProperty;
  function own(o, k) { return o && has.call(o, k) ? o[k] : undefined; }
  function nop() {}

  function canonical() {
    var l = d.querySelector('link[rel=canonical]');
    try { return l && l.href ? new URL(l.href, location.href).pathname : ''; } catch (e) { return ''; }
  }

  /* A keepalive fetch outlives the page like a beacon, and unlike a beacon it can leave the
   * page's cookies and address behind (a beacon always sends the collector's cookies and the
   * Referer the page's policy allows). Returns a promise settled when the answer came, the
   * URL when a beacon was sent instead, or ''. */
  var keepalive = !!(w.Request && 'keepalive' in w.Request.prototype);
  function post(ev) {
    var url = base + 'v1/events', body = JSON.stringify(ev);
    if (keepalive) {
      try {
        return fetch(url, {method: 'POST', body: body, keepalive: true, credentials: 'omit',
                           referrerPolicy: 'no-referrer',
                           headers: {'Content-Type': 'text/plain;charset=UTF-8'}}).then(nop, nop);
      } catch (e) {}
    }
    try { if (navigator.sendBeacon && navigator.sendBeacon(url, body)) return url; } catch (e) {}
    return '';
  }

  function format(n, el) {
    var lang = d.documentElement.lang || 'en', compact = compactAll ||
        el.getAttribute('data-format') === 'compact';
    try {
      return new Intl.NumberFormat(lang, compact ? {notation: 'compact', maximumFractionDigits: 1}
                                                 : {}).format(n);
    } catch (e) { return String(n); }
  }

  function elements() { return d.querySelectorAll('[data-tally]'); }
  function articleOf(el) { return el.getAttribute('data-tally-article') || page; }

  function value(st, el) {
    var what = el.getAttribute('data-tally'), net = el.getAttribute('data-tally-network');
    if (what === 'shares' && net) return own(st.shares_by_network, net) || 0;
    var v = own(st, what);
    return typeof v === 'number' ? v : null;
  }

  function render() {
    var els = elements();
    for (var i = 0; i < els.length; i++) {
      var st = shown.get(articleOf(els[i])), v = st && value(st, els[i]);
      if (st && v !== null) els[i].textContent = format(v, els[i]);
    }
  }

  /* One request per 100 articles, or fewer when their ids make the URL long (proxies and CDNs
   * refuse URLs past about 8 KB). */
  function load() {
    var els = elements(), q = [], len = 0, seen = new Map();
    for (var i = 0; i < els.length; i++) {
      var a = articleOf(els[i]), p = 'article=' + encodeURIComponent(a);
      if (seen.has(a)) continue;
      seen.set(a, 1);
      if (q.length && (q.length === 100 || len + p.length > 7000)) { fetchStats(q); live(q); q = []; len = 0; }
      q.push(p);
      len += p.length + 1;
    }
    if (q.length) { fetchStats(q); live(q); }
  }

  /* data-live: the counts follow the collector's /v1/live stream (one per 100 articles), which
   * sends each article's stats when they change. Where EventSource is missing or the stream
   * is refused, the numbers stay as loaded. */
  function live(q) {
    if (!liveOn || !w.EventSource) return;
    try {
      var es = new EventSource(base + 'v1/live?' + q.join('&'));
      es.addEventListener('stats', function (e) {
        var st;
        try { st = JSON.parse(e.data); } catch (x) { return; }
        if (!st || typeof st.article !== 'string') return;
        shown.set(st.article, st);
        render();
      });
    } catch (e) {}
  }

  function fetchStats(q) {
    fetch(base + 'v1/stats?' + q.join('&'), {credentials: 'omit', referrerPolicy: 'no-referrer'})
        .then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (j) {
      if (!j) return;
      for (var i = 0; i < j.articles.length; i++) shown.set(j.articles[i].article, j.articles[i]);
      render();
    })['catch'](function () {});
  }

  /* Read the counts once the view is in: tallyd answers only after Redis has the view, and a
   * beacon shows up in Resource Timing when its answer came. Wait at most a second. */
  function afterView(sent, then) {
    var done = false, po;
    function go() { if (!done) { done = true; if (po) po.disconnect(); then(); } }
    if (sent && sent.then) {
      sent.then(go);
      return setTimeout(go, 1000);
    }
    var url = sent;
    if (!url || !w.PerformanceObserver) return go();
    try {
      po = new PerformanceObserver(function (l) {
        l.getEntries().forEach(function (e) { if (e.name === url) go(); });
      });
      po.observe({type: 'resource'});
    } catch (e) { return go(); }
    setTimeout(go, 1000);
  }

  function share(el) {
    var net = el.getAttribute('data-tally-share'), a = el.getAttribute('data-tally-article') || page;
    post({type: 'share', article: a, network: net});
    var st = shown.get(a), by = Object.create(null), old = st && st.shares_by_network;
    if (!st) shown.set(a, st = {views: 0, visitors: 0, shares: 0, comments: 0});
    for (var k in old) if (has.call(old, k)) by[k] = old[k];
    by[net] = (by[net] || 0) + 1;
    st.shares = (own(st, 'shares') || 0) + 1;
    st.shares_by_network = by;
    render();
  }

  function start() {
    page = s.getAttribute('data-article') || canonical() || location.pathname;
    var sent = s.getAttribute('data-count') === 'false' ? '' : post({type: 'view', article: page});
    d.addEventListener('click', function (e) {
      var t = e.target && e.target.closest ? e.target.closest('[data-tally-share]') : null;
      if (t) share(t);
    });
    if (elements().length) afterView(sent, load);
  }

  function ready(f) {
    if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', f); else f();
  }

  try {
    if (d.prerendering) d.addEventListener('prerenderingchange', function () { ready(start); },
                                           {once: true});
    else ready(start);
  } catch (e) {}
})();
