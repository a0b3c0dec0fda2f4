/* tally.js -- counts one view of this page and shows its numbers; see tallyd's README. */
(function () {
  'use strict';
  var d = document, s = d.currentScript, w = window;
  if (!s || !s.src || w.__tally) return;
  w.__tally = 1;

  var base = s.src.replace(/[?#].*$/, '').replace(/[^\/]*$/, '');
  var own = '';  // this page's article: read in start(), once <link rel=canonical> is parsed
  var compactAll = s.getAttribute('data-format') === 'compact';
  var shown = {};  // article -> {views:..., ...} as last rendered

  function canonical() {
    var l = d.querySelector('link[rel=canonical]');
    try { return l && l.href ? new URL(l.href, location.href).pathname : ''; } catch (e) { return ''; }
  }

  function post(ev) {
    var url = base + 'v1/events', body = JSON.stringify(ev);
    try { if (navigator.sendBeacon && navigator.sendBeacon(url, body)) return url; } catch (e) {}
    try {
      fetch(url, {method: 'POST', body: body, keepalive: true, credentials: 'omit',
                  headers: {'Content-Type': 'text/plain'}})['catch'](function () {});
    } catch (e) {}
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
  function articleOf(el) { return el.getAttribute('data-tally-article') || own; }

  function value(st, el) {
    var what = el.getAttribute('data-tally'), net = el.getAttribute('data-tally-network');
    if (what === 'shares' && net) return (st.shares_by_network || {})[net] || 0;
    return typeof st[what] === 'number' ? st[what] : null;
  }

  function render() {
    var els = elements();
    for (var i = 0; i < els.length; i++) {
      var st = shown[articleOf(els[i])], v = st && value(st, els[i]);
      if (st && v !== null) els[i].textContent = format(v, els[i]);
    }
  }

  /* One request per 100 articles, or fewer when their ids make the URL long (proxies and CDNs
   * refuse URLs past about 8 KB). */
  function load() {
    var els = elements(), q = [], len = 0, seen = {};
    for (var i = 0; i < els.length; i++) {
      var a = articleOf(els[i]), p = 'article=' + encodeURIComponent(a);
      if (seen[a]) continue;
      seen[a] = 1;
      if (q.length && (q.length === 100 || len + p.length > 7000)) { fetchStats(q); q = []; len = 0; }
      q.push(p);
      len += p.length + 1;
    }
    if (q.length) fetchStats(q);
  }

  function fetchStats(q) {
    fetch(base + 'v1/stats?' + q.join('&'), {credentials: 'omit'}).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (j) {
      if (!j) return;
      for (var i = 0; i < j.articles.length; i++) shown[j.articles[i].article] = j.articles[i];
      render();
    })['catch'](function () {});
  }

  /* Read the counts once the view is in: a beacon shows up in Resource Timing when its answer
   * came, and tallyd answers only after Redis has the view. Wait at most a second. */
  function afterBeacon(url, then) {
    var done = false, po;
    function go() { if (!done) { done = true; if (po) po.disconnect(); then(); } }
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
    var net = el.getAttribute('data-tally-share'), a = el.getAttribute('data-tally-article') || own;
    post({type: 'share', article: a, network: net});
    var st = shown[a] || (shown[a] = {views: 0, visitors: 0, shares: 0, comments: 0,
                                       shares_by_network: {}});
    st.shares = (st.shares || 0) + 1;
    st.shares_by_network = st.shares_by_network || {};
    st.shares_by_network[net] = (st.shares_by_network[net] || 0) + 1;
    render();
  }

  function start() {
    own = s.getAttribute('data-article') || canonical() || location.pathname;
    var url = s.getAttribute('data-count') === 'false' ? '' : post({type: 'view', article: own});
    d.addEventListener('click', function (e) {
      var t = e.target && e.target.closest ? e.target.closest('[data-tally-share]') : null;
      if (t) share(t);
    });
    if (elements().length) afterBeacon(url, load);
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
