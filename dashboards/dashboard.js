/* dashboard.js -- /dashboard: live totals, top articles and an article's chart, read from
 * tallyd's JSON API. Served as a file, so that the page's CSP allows no inline script. */
(function () {
  'use strict';
  var state = {period: 'day', metric: 'views', interval: 'hour', article: null, listed: []};
  var fmt = new Intl.NumberFormat('en');
  var SVG = 'http://www.w3.org/2000/svg';

  function $(id) { return document.getElementById(id); }
  function get(url) {
    return fetch(url, {cache: 'no-store'}).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.json();
    });
  }
  function setText(el, v) {
    var s = typeof v === 'number' ? fmt.format(v) : v;
    if (el.textContent !== s) {
      if (el.textContent !== '–' && el.classList) { el.classList.remove('bump'); void el.offsetWidth; el.classList.add('bump'); }
      el.textContent = s;
    }
  }
  // An article id, isolated from its neighbours and laid out by its own first strong letter:
  // "\u202Eevil.com/gnp.exe" must not turn the rank and count around it, nor read backwards.
  function idSpan(id) {
    var e = document.createElement('span');
    e.className = 'id';
    e.dir = 'auto';
    e.textContent = id;
    return e;
  }
  function segmented(id, key, then) {
    var box = $(id);
    box.addEventListener('click', function (e) {
      var b = e.target.closest('button');
      if (!b) return;
      Array.prototype.forEach.call(box.querySelectorAll('button'), function (x) {
        x.setAttribute('aria-pressed', x === b ? 'true' : 'false');
      });
      state[key] = b.getAttribute('data-v');
      then();
    });
  }

  // Seconds as m:ss (h:mm:ss from an hour on).
  function duration(seconds) {
    var s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
    var ss = String(s % 60).padStart(2, '0');
    return h > 0 ? h + ':' + String(m).padStart(2, '0') + ':' + ss : m + ':' + ss;
  }
  function percent(part, whole) {
    return Math.round(100 * part / whole) + '%';
  }
  // An article's engagement: average engaged time per view, and the read ratio (reads ÷ views).
  function engagement(s) {
    if (!s.views) return s.engaged_seconds ? duration(s.engaged_seconds) + ' in all' : '–';
    return duration(s.engaged_seconds / s.views) + ' · ' + percent(s.reads, s.views) + ' read';
  }

  function status(ok, text) {
    $('dot').className = 'dot ' + (ok ? 'ok' : 'bad');
    $('status').textContent = text;
  }

  function live() {
    get('/v1/totals?period=day').then(function (t) {
      setText($('live-views'), t.views);
      setText($('live-shares'), t.shares);
      setText($('live-comments'), t.comments);
      status(true, 'live');
    }).catch(function () { status(false, 'collector unavailable'); });
  }

  /* Live counts: one /v1/live stream of the articles on screen (the top list and the chart's).
   * The selected article's counts follow it as they change, and a change to any of them
   * refreshes the totals, the list and the chart at once. What happens to articles off screen
   * shows at the slower refresh below, as it does where EventSource fails (a 503 when the
   * collector has too many streams: it is tried again when the list changes). */
  var stream = null, streamKey = '', last = new Map(), soon = 0;
  function refreshSoon() {
    if (soon) return;
    soon = setTimeout(function () { soon = 0; live(); totals(); top(); series(); }, 200);
  }
  function showArticle(st) {
    var box = $('article-live'), parts = [];
    if (!box || st.article !== state.article) return;
    ['views', 'visitors', 'shares', 'comments'].forEach(function (k) {
      if (typeof st[k] === 'number') parts.push(fmt.format(st[k]) + ' ' + (st[k] === 1 ? k.slice(0, -1) : k));
    });
    setText(box, parts.join(' · '));
  }
  function watch() {
    var ids = state.listed.slice();
    if (state.article && ids.indexOf(state.article) < 0) ids.push(state.article);
    ids.sort(); // a new order of the same articles keeps the stream
    var key = ids.map(function (a) { return 'article=' + encodeURIComponent(a); }).join('&');
    if (key === streamKey) return;
    streamKey = key;
    if (stream) stream.close();
    stream = null;
    if (!ids.length || !window.EventSource) return;
    var es = stream = new EventSource('/v1/live?' + key);
    es.addEventListener('stats', function (e) {
      var st;
      try { st = JSON.parse(e.data); } catch (x) { return; }
      var before = last.get(st.article);
      last.set(st.article, e.data);
      showArticle(st);
      if (before !== undefined && before !== e.data) refreshSoon();
    });
    es.onerror = function () {
      if (es.readyState === 2 && stream === es) { stream = null; streamKey = ''; }
    };
  }

  function totals() {
    get('/v1/totals?period=' + state.period).then(function (t) {
      setText($('t-views'), t.views);
      setText($('t-shares'), t.shares);
      setText($('t-comments'), t.comments);
      setText($('t-reads'), t.reads);
      setText($('t-engaged'), t.views ? duration(t.engaged_seconds / t.views) : '–');
      setText($('t-read-ratio'), t.views ? percent(t.reads, t.views) : '–');
    }).catch(function () {});
  }

  function top() {
    get('/v1/top?limit=10&metric=' + state.metric + '&period=' + state.period).then(function (t) {
      var box = $('top'), max = t.articles.length ? t.articles[0].count : 1;
      var table = document.createElement('table'), engaged = [];
      t.articles.forEach(function (a, i) {
        var tr = table.insertRow();
        tr.className = 'row' + (a.article === state.article ? ' sel' : '');
        tr.insertCell().textContent = i + 1;
        tr.cells[0].className = 'rank';
        var name = tr.insertCell();
        name.className = 'name';
        name.title = '\u2068' + a.article + '\u2069'; // first-strong isolate ... pop
        name.appendChild(idSpan(a.article));
        var bar = document.createElement('div'), fill = document.createElement('i');
        bar.className = 'bar';
        fill.style.width = Math.max(2, Math.round(100 * a.count / max)) + '%';
        bar.appendChild(fill);
        name.appendChild(bar);
        var c = tr.insertCell();
        c.className = 'count';
        c.textContent = t.metric === 'engaged' ? duration(a.count) : fmt.format(a.count);
        var e = tr.insertCell();
        e.className = 'engaged';
        e.title = 'average engaged time per view · reads ÷ views';
        e.textContent = '–';
        engaged.push(e);
        tr.addEventListener('click', function () {
          // Mark the row at once: the chart may arrive before the next refresh of the list.
          var prev = table.querySelector('tr.sel');
          if (prev) prev.classList.remove('sel');
          tr.classList.add('sel');
          state.article = a.article;
          var known = last.get(a.article);
          if (known) showArticle(JSON.parse(known)); else $('article-live').textContent = '';
          series();
          watch();
        });
      });
      box.textContent = '';
      if (!t.articles.length) {
        var e = document.createElement('div');
        e.className = 'empty';
        e.textContent = 'Nothing counted for this period yet.';
        box.appendChild(e);
      } else {
        box.appendChild(table);
      }
      if (t.articles.length) {
        // Each listed article's engagement, from its stats: one request for the whole list.
        get('/v1/stats?' + t.articles.map(function (a) {
          return 'article=' + encodeURIComponent(a.article);
        }).join('&')).then(function (r) {
          r.articles.forEach(function (s, i) { engaged[i].textContent = engagement(s); });
        }).catch(function () {});
      }
      state.listed = t.articles.map(function (a) { return a.article; });
      if (!state.article && t.articles.length) { state.article = t.articles[0].article; series(); top(); }
      watch();
    }).catch(function () {});
  }

  function el(name, attrs, text) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function series() {
    if (!state.article) return;
    var url = '/v1/series/' + encodeURIComponent(state.article) + '?metric=' + state.metric +
              '&interval=' + state.interval;
    get(url).then(function (s) {
      var title = $('chart-title');
      title.textContent = '';
      title.appendChild(idSpan(s.article));
      title.appendChild(document.createTextNode(' · ' + s.metric));
      draw(s.points, s.interval);
    }).catch(function () {});
  }

  function draw(points, interval) {
    var svg = $('chart'), W = 640, H = 360, L = 44, R = 10, T = 14, B = 30;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = 1;
    points.forEach(function (p) { if (p.value > max) max = p.value; });
    max = Math.ceil(max / 4) * 4; // so that each of the 4 grid lines is a whole number
    var w = (W - L - R) / points.length;
    for (var g = 0; g <= 4; g++) {
      var y = T + (H - T - B) * (1 - g / 4);
      svg.appendChild(el('line', {x1: L, x2: W - R, y1: y, y2: y, stroke: '#eef0f3'}));
      svg.appendChild(el('text', {x: L - 6, y: y + 3, 'text-anchor': 'end'}, fmt.format(Math.round(max * g / 4))));
    }
    points.forEach(function (p, i) {
      var h = (H - T - B) * Math.max(0, p.value) / max;
      var r = el('rect', {x: L + i * w + 1, y: H - B - h, width: Math.max(1, w - 2), height: h,
                          fill: '#2563eb', rx: 1.5});
      r.appendChild(el('title', {}, p.t + ': ' + fmt.format(p.value)));
      svg.appendChild(r);
      var every = interval === 'hour' ? 4 : 5;
      if (i % every === 0) {
        var d = new Date(p.t), label = interval === 'hour'
          ? String(d.getUTCHours()).padStart(2, '0') + ':00'
          : (d.getUTCMonth() + 1) + '/' + d.getUTCDate();
        svg.appendChild(el('text', {x: L + i * w + w / 2, y: H - 10, 'text-anchor': 'middle'}, label));
      }
    });
  }

  segmented('period', 'period', function () { totals(); top(); });
  segmented('metric', 'metric', function () { top(); series(); });
  segmented('interval', 'interval', series);
  live(); totals(); top();
  setInterval(function () { live(); totals(); top(); series(); }, 10000);
})();
