/* tally.js -- counts one view of this page and shows its numbers; see tallyd's README. */
(function () {
  'use strict';

  /* Reading time. Words of space-separated scripts are read at about 230 a minute; Chinese,
   * Japanese and Korean text is counted in characters, read at about 500 a minute; an image
   * holds the reader 12 s, the next one 11 s, and so on down to 3 s from the tenth on. All of
   * it is summed as words read at 230 a minute: the `words` a view sends, so a list page shows
   * from the stats the same reading time as the article's own page. */
  var WPM = 230, CPM = 500, WORDS_MAX = 1000000;
  var CJK = /[\u1100-\u11ff\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9d]|[\ud840-\ud87f][\udc00-\udfff]/g;
  var LETTER;  // a word has a letter or a digit: "—", "·" or "&" alone is none
  try { LETTER = new RegExp('[\\p{L}\\p{N}]', 'u'); } catch (e) { LETTER = /[^\s!-\/:-@\[-`{-~\u00a0-\u00bf\u2000-\u2bff\u3000-\u303f]/; }

  /* {words, cjk}: words between spaces and dashes, and CJK characters one by one. */
  function countText(text) {
    var cjk = 0, words = 0, t;
    t = String(text).replace(CJK, function () { cjk++; return ' '; }).split(/[\s\u2013\u2014]+/);
    for (var i = 0; i < t.length; i++) if (LETTER.test(t[i])) words++;
    return {words: words, cjk: cjk};
  }
  function imageSeconds(n) { return n <= 10 ? 12 * n - n * (n - 1) / 2 : 75 + 3 * (n - 10); }
  function readingWords(c, images) {
    return Math.round(c.words + c.cjk * WPM / CPM + imageSeconds(images) * WPM / 60);
  }
  function readTime(words) {
    var m = Math.max(1, Math.ceil(words / WPM));
    return m === 1 ? '1 minute read' : m + ' minutes read';
  }
  /* Read through: the end of the text has been in view, and the reader was engaged for at
   * least a third of the reading time (engaged time counts only seconds with input in them,
   * so it falls short of the time really spent reading). */
  function readThrough(words, seconds, endSeen) { return !!endSeen && seconds * WPM * 3 >= words * 60; }

  /* Engaged time: the page visible and the reader active (input within the last IDLE ms).
   * Times are milliseconds of one monotonic clock, given by the caller. take() answers the
   * whole seconds not taken before (at most max), so no second is ever sent twice. */
  var IDLE = 5000, EVERY = 60000, SECONDS_MAX = 3600;
  function engagement(t, visible) {
    var ms = 0, sent = 0, mark = t, until = visible ? t + IDLE : t, on = visible;
    function to(t) {
      if (t < mark) t = mark;
      if (on && until > mark) ms += Math.min(t, until) - mark;
      mark = t;
    }
    return {
      active: function (t) { to(t); if (on) until = mark + IDLE; },
      visible: function (t, v) { to(t); on = v; if (v) until = mark + IDLE; },
      take: function (t, max) {
        to(t);
        var n = Math.min(Math.floor(ms / 1000) - sent, max);
        sent += n;
        return n;
      },
      sent: function () { return sent; }
    };
  }

  if (typeof document === 'undefined') {  // loaded by the script's own unit tests, in Node
    if (typeof exports === 'object' && exports) {
      exports.helpers = {countText: countText, imageSeconds: imageSeconds, readingWords: readingWords,
                         readTime: readTime, readThrough: readThrough, engagement: engagement,
                         IDLE: IDLE, EVERY: EVERY};
    }
    return;
  }

  var d = document, s = d.currentScript, w = window;
  if (!s || !s.src || w.__tally) return;
  w.__tally = 1;

  var base = s.src.replace(/[?#].*$/, '').replace(/[^\/]*$/, '');
  var page = '';  // this page's article: read in start(), once <link rel=canonical> is parsed
  var words = 0;  // its reading length (see readingWords), counted in start()
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
   * URL when a beacon was sent instead, or ''. With STATS the answer also carries the stats
   * of the event's article, counted with it (?stats=1): they are taken as shown. */
  var keepalive = !!(w.Request && 'keepalive' in w.Request.prototype);
  function post(ev, stats) {
    var url = base + 'v1/events' + (stats ? '?stats=1' : ''), body = JSON.stringify(ev);
    if (keepalive) {
      try {
        return fetch(url, {method: 'POST', body: body, keepalive: true, credentials: 'omit',
                           referrerPolicy: 'no-referrer',
                           headers: {'Content-Type': 'text/plain;charset=UTF-8'}})
            .then(function (r) { return stats && r.ok ? r.json() : null; })
            .then(took, nop);
      } catch (e) {}
    }
    try { if (navigator.sendBeacon && navigator.sendBeacon(url, body)) return url; } catch (e) {}
    return '';
  }

  /* The stats an answer carries ({"articles": [...]}, as GET /v1/stats answers them); BROUGHT
   * remembers their articles, which load() then does not ask for. */
  var brought = new Map();
  function took(j) {
    var list = j && j.articles;
    if (!list || !list.length) return;
    for (var i = 0; i < list.length; i++) {
      if (list[i] && typeof list[i].article === 'string') {
        shown.set(list[i].article, list[i]);
        brought.set(list[i].article, 1);
      }
    }
    render();
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
  function showsPage() {
    var els = elements();
    for (var i = 0; i < els.length; i++) if (articleOf(els[i]) === page && !ownReadTime(els[i])) return true;
    return false;
  }
  // This page's reading time, counted here: no stats needed for it.
  function ownReadTime(el) {
    return words > 0 && el.getAttribute('data-tally') === 'read-time' && articleOf(el) === page;
  }

  /* A number to format, a text to show as it is, or null: not known (yet). */
  function value(st, el) {
    var what = el.getAttribute('data-tally'), net = el.getAttribute('data-tally-network');
    if (what === 'read-time') {
      var n = ownReadTime(el) ? words : own(st, 'words');
      return typeof n === 'number' && n > 0 ? readTime(n) : null;
    }
    if (!st) return null;
    if (what === 'shares' && net) return own(st.shares_by_network, net) || 0;
    var v = own(st, what);
    return typeof v === 'number' ? v : null;
  }

  function render() {
    var els = elements();
    for (var i = 0; i < els.length; i++) {
      var v = value(shown.get(articleOf(els[i])), els[i]);
      if (v !== null) els[i].textContent = typeof v === 'string' ? v : format(v, els[i]);
    }
  }

  /* One request per 100 articles, or fewer when their ids make the URL long (proxies and CDNs
   * refuse URLs past about 8 KB). The stats of articles the view's answer brought are not
   * asked for again; their live stream is. */
  function load() {
    var els = elements(), q = [], len = 0, seen = new Map();
    function flush() {
      var need = q.filter(function (p) { return !brought.has(seen.get(p)); });
      if (need.length) fetchStats(need);
      live(q);
      q = [];
      len = 0;
    }
    for (var i = 0; i < els.length; i++) {
      var a = articleOf(els[i]), p = 'article=' + encodeURIComponent(a);
      if (seen.has(p) || ownReadTime(els[i])) continue;
      seen.set(p, a);
      if (q.length && (q.length === 100 || len + p.length > 7000)) flush();
      q.push(p);
      len += p.length + 1;
    }
    if (q.length) flush();
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

  /* The article's text: the element of the script's data-text selector, else <article>, else
   * <main>, else <body>. */
  function textRoot() {
    var sel = s.getAttribute('data-text'), el = null;
    if (sel) try { el = d.querySelector(sel); } catch (e) {}
    return el || d.querySelector('article') || d.querySelector('main') || d.body;
  }

  /* The text a reader reads under root, and its images. Left out: scripts and styles, forms,
   * navigation and asides, the page's own header and footer (outside <article>, <main> and
   * <section>), hidden elements, ruby annotations, and tally's own counts and buttons. Block
   * elements are kept apart by a space, inline ones are not ("<b>un</b>told" is one word). */
  var SKIP = /^(SCRIPT|STYLE|NOSCRIPT|TEMPLATE|IFRAME|OBJECT|EMBED|SVG|MATH|CANVAS|VIDEO|AUDIO|NAV|ASIDE|FORM|BUTTON|SELECT|TEXTAREA|INPUT|RT|RP|DIALOG)$/;
  var INLINE = /^(A|ABBR|B|BDI|BDO|CITE|CODE|DATA|DEL|DFN|EM|FONT|I|INS|KBD|MARK|Q|RUBY|RB|S|SAMP|SMALL|SPAN|STRONG|SUB|SUP|TIME|U|VAR)$/;
  var SECTION = /^(ARTICLE|MAIN|SECTION)$/;
  function readable(root) {
    var parts = [], images = 0;
    function big(img) {  // icons and emoji images take no time
      var wd = parseInt(img.getAttribute('width'), 10), ht = parseInt(img.getAttribute('height'), 10);
      return !(wd < 48 || ht < 48);
    }
    (function walk(el, inSection) {
      for (var n = el.firstChild; n; n = n.nextSibling) {
        if (n.nodeType === 3) { parts.push(n.data); continue; }
        if (n.nodeType !== 1) continue;
        var tag = String(n.tagName).toUpperCase();
        if (SKIP.test(tag) || n.hidden === true || n.getAttribute('aria-hidden') === 'true' ||
            n.hasAttribute('data-tally') || n.hasAttribute('data-tally-share') ||
            ((tag === 'HEADER' || tag === 'FOOTER') && !inSection)) continue;
        if (tag === 'IMG' || n.getAttribute('role') === 'img') {
          if (tag !== 'IMG' || big(n)) images++;
          continue;
        }
        var inline = INLINE.test(tag);
        if (!inline) parts.push(' ');
        walk(n, inSection || SECTION.test(tag));
        if (!inline) parts.push(' ');
      }
    })(root, SECTION.test(root.tagName));
    return readingWords(countText(parts.join('')), images);
  }

  /* Engaged time of this page view, sent as engage events when the page is hidden or left,
   * and once a minute while it stays in view. */
  function engage(root) {
    var now = w.performance && performance.now ? function () { return performance.now(); } : Date.now;
    var timer = 0, end = false, readSent = false;
    function visible() { return d.visibilityState !== 'hidden'; }
    var acc = engagement(now(), visible());
    function seeEnd() {
      if (end || !visible()) return;
      end = Math.floor(root.getBoundingClientRect().bottom) <=
            (w.innerHeight || d.documentElement.clientHeight);
    }
    function flush() {
      var n = acc.take(now(), SECONDS_MAX), ev;
      if (!n) return;
      ev = {type: 'engage', article: page, seconds: n, read: false};
      if (!readSent && readThrough(words, acc.sent(), end)) ev.read = readSent = true;
      post(ev);
    }
    function tick() { timer = 0; flush(); arm(); }
    function arm() { if (!timer && visible()) timer = setTimeout(tick, EVERY); }
    function onActive(e) {
      if (!visible()) return;
      acc.active(now());
      if (e.type === 'scroll' || e.type === 'resize') seeEnd();
    }
    var opt = {capture: true, passive: true};
    ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'scroll', 'resize'].forEach(
        function (t) { w.addEventListener(t, onActive, opt); });
    function setVisible(v) {
      acc.visible(now(), v);
      if (v) { seeEnd(); arm(); } else { clearTimeout(timer); timer = 0; flush(); }
    }
    d.addEventListener('visibilitychange', function () { setVisible(visible()); });
    // Left (or put in the back/forward cache, from which it may come back).
    w.addEventListener('pagehide', function () { setVisible(false); });
    w.addEventListener('pageshow', function (e) { if (e.persisted) setVisible(visible()); });
    seeEnd();
    arm();
  }

  function start() {
    page = s.getAttribute('data-article') || canonical() || location.pathname;
    var root = textRoot(), counting = s.getAttribute('data-count') !== 'false', view;
    try { words = Math.min(root ? readable(root) : 0, WORDS_MAX); } catch (e) {}
    view = {type: 'view', article: page};
    if (words > 0) view.words = words;
    // The page's own counts come back with its view, when it shows them.
    var sent = counting ? post(view, showsPage()) : '';
    render();
    if (counting && root && s.getAttribute('data-engage') !== 'false') engage(root);
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
