// The audit console: reads the admin plane's JSON APIs and /metrics and shows them.
//
// Every value shown comes from clients of the proxy (keys, user names, library names, client
// addresses they chose to send), so the DOM is built from text nodes only: no HTML parsing, no
// markup strings. The Content-Security-Policy on /ui is the second wall, not the first.
'use strict';

(function () {
  const KEY = 'rap.apiKey';
  const SECRET = 'rap.apiSecret';
  const LIMIT = 25; // entries per page of the offset/limit APIs
  const LIVE_MS = 2000;
  const LIVE_POINTS = 60;
  const CLASSES = ['read', 'write', 'non_read_write', 'unknown'];

  const $ = (id) => document.getElementById(id);
  const state = {
    view: 'records',
    records: { page: 1, pages: 1 },
    live: { timer: null, last: null, history: [] },
  };

  /** A refused key: the login form is shown again. */
  class Unauthorized extends Error {}

  /** The value as text: strings as they are, objects (binary keys as {b64}) as JSON. */
  function show(value) {
    if (value === null || value === undefined) return '';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  /** `yyyy-MM-ddTHH:mm:ssZ`, the APIs' time format. */
  function iso(date) {
    return date.toISOString().slice(0, 19) + 'Z';
  }

  function credentials() {
    const key = sessionStorage.getItem(KEY);
    const secret = sessionStorage.getItem(SECRET);
    return key === null || secret === null ? {} : { 'x-api-key': key, 'x-api-secret-key': secret };
  }

  /** The error message of an answer: the APIs' `Message`, else its text. */
  async function messageOf(response) {
    const body = await response.text();
    try {
      return show(JSON.parse(body).Message) || body;
    } catch (_) {
      return body || 'HTTP ' + response.status;
    }
  }

  /** GET `path` with the keys; JSON (or text for /metrics). */
  async function api(path) {
    let response;
    try {
      response = await fetch(path, { headers: credentials(), cache: 'no-store', credentials: 'omit' });
    } catch (error) {
      // A key with characters no header may hold also ends here.
      throw new Error('request failed: ' + error.message);
    }
    if (response.status === 401) throw new Unauthorized(await messageOf(response));
    if (!response.ok) throw new Error(response.status + ': ' + (await messageOf(response)));
    return path === '/metrics' ? response.text() : response.json();
  }

  /** Runs a loader; a refused key brings back the login form, anything else is shown. */
  async function guarded(load) {
    try {
      await load();
      $('error').hidden = true;
      $('nav').hidden = false;
    } catch (error) {
      if (error instanceof Unauthorized) {
        showLogin(error.message);
      } else {
        $('error').textContent = error.message;
        $('error').hidden = false;
      }
    }
  }

  /** Marks a view as (re)drawn: tests and screen readers wait on it. */
  function loaded(view) {
    const section = $('view-' + view);
    section.dataset.loads = String(Number(section.dataset.loads || 0) + 1);
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = show(text);
    if (className) node.className = className;
    return node;
  }

  /** Replaces a table's rows; each cell is text, labelled with its column for narrow screens. */
  function fill(tableId, rows) {
    const table = $(tableId);
    const columns = Array.from(table.querySelectorAll('thead th'));
    const labels = columns.map((th) => th.textContent);
    const body = table.querySelector('tbody');
    if (rows.length === 0) {
      const row = element('tr', undefined, 'empty');
      const cell = element('td', 'Nothing here.');
      cell.colSpan = labels.length;
      row.append(cell);
      body.replaceChildren(row);
      return;
    }
    body.replaceChildren(...rows.map((cells) => {
      const row = document.createElement('tr');
      cells.forEach((value, at) => {
        const cell = value instanceof Node ? element('td') : element('td', value);
        if (value instanceof Node) cell.append(value);
        cell.setAttribute('data-label', labels[at] || '');
        if (columns[at] && columns[at].className) cell.className = columns[at].className;
        row.append(cell);
      });
      return row;
    }));
  }

  // ---- login ------------------------------------------------------------------------------

  function showLogin(message) {
    stopLive();
    document.querySelectorAll('.view').forEach((view) => { view.hidden = true; });
    $('nav').hidden = true;
    $('login').hidden = false;
    $('error').textContent = message || '';
    $('error').hidden = !message;
    $('login-key').focus();
  }

  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $('login-key').value);
    sessionStorage.setItem(SECRET, $('login-secret').value);
    $('login-secret').value = '';
    $('login').hidden = true;
    showView(state.view);
  });

  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(SECRET);
    showLogin('Signed out.');
  });

  // ---- views ------------------------------------------------------------------------------

  const loaders = {};

  function showView(view) {
    state.view = view;
    if (view !== 'live') stopLive();
    document.querySelectorAll('.view').forEach((section) => {
      section.hidden = section.id !== 'view-' + view;
    });
    document.querySelectorAll('nav .tab').forEach((tab) => {
      tab.classList.toggle('active', tab.dataset.view === view);
    });
    guarded(loaders[view]);
  }

  document.querySelectorAll('nav .tab').forEach((tab) => {
    tab.addEventListener('click', () => showView(tab.dataset.view));
  });

  // ---- audit records (DescribeAuditRecords) -----------------------------------------------

  const recordsForm = $('records-form');

  /** The last day up to a minute from now: the widest range the API accepts. */
  function defaultRange() {
    const end = new Date(Date.now() + 60000);
    recordsForm.elements.EndTime.value = iso(end);
    recordsForm.elements.StartTime.value = iso(new Date(end.getTime() - 86400000));
  }

  loaders.records = async function () {
    if (!recordsForm.elements.StartTime.value) defaultRange();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(recordsForm)) {
      if (String(value).trim() !== '') params.set(name, String(value).trim());
    }
    params.set('PageNumber', String(state.records.page));
    const answer = await api('/api/v1/audit-records?' + params);
    const items = (answer.Items && answer.Items.SQL) || [];
    fill('records-table', items.map((item) => [
      item.ExecuteTime, item.AccountName, item.HostAddress, item.DatabaseName, item.SQLType,
      item.SQLText, item.TotalExecutionTimes,
    ]));
    const total = Number(answer.TotalRecordCount) || 0;
    state.records.pages = Math.max(1, Math.ceil(total / (Number(answer.PageSize) || 30)));
    $('records-status').textContent =
      'Page ' + answer.PageNumber + ' of ' + state.records.pages + ' · ' + total + ' records';
    $('records-prev').disabled = state.records.page <= 1;
    $('records-next').disabled = state.records.page >= state.records.pages;
    loaded('records');
  };

  recordsForm.addEventListener('submit', (event) => {
    event.preventDefault();
    state.records.page = 1;
    showView('records');
  });
  $('records-prev').addEventListener('click', () => {
    state.records.page = Math.max(1, state.records.page - 1);
    showView('records');
  });
  $('records-next').addEventListener('click', () => {
    state.records.page = Math.min(state.records.pages, state.records.page + 1);
    showView('records');
  });

  // ---- offset/limit pages: sessions, ACL LOG, activity ------------------------------------

  /** A table over an offset/limit API, with its own pager. */
  function pagedTable(name, path, key, toCells) {
    const pager = { offset: 0 };
    const load = async function () {
      const answer = await api(path + '?offset=' + pager.offset + '&limit=' + LIMIT);
      const entries = answer[key] || [];
      fill(name + '-table', entries.map(toCells));
      const last = pager.offset + entries.length;
      const total = answer.total === null ? 'more' : String(answer.total);
      $(name + '-status').textContent = entries.length === 0
        ? 'No entries (of ' + total + ')'
        : (pager.offset + 1) + '–' + last + ' of ' + total;
      $(name + '-prev').disabled = pager.offset === 0;
      $(name + '-next').disabled = !answer.more;
    };
    $(name + '-prev').addEventListener('click', () => {
      pager.offset = Math.max(0, pager.offset - LIMIT);
      guarded(async () => { await load(); loaded(state.view); });
    });
    $(name + '-next').addEventListener('click', () => {
      pager.offset += LIMIT;
      guarded(async () => { await load(); loaded(state.view); });
    });
    return load;
  }

  function clientText(client) {
    if (!client || typeof client !== 'object') return show(client);
    return client.port === undefined ? show(client.ip) : show(client.ip) + ':' + show(client.port);
  }

  /** Opens the records of a session: its user, address and time window (the records API has
   *  no session filter, so other sessions of the same user and address in the window show too). */
  function openSession(session) {
    const start = new Date(String(session.startTime));
    if (Number.isNaN(start.getTime())) return;
    const limit = start.getTime() + 86400000;
    const closed = session.endTime ? new Date(String(session.endTime)).getTime() + 1000 : NaN;
    const end = Number.isNaN(closed) ? Math.min(Date.now() + 60000, limit) : Math.min(closed, limit);
    recordsForm.reset();
    recordsForm.elements.StartTime.value = iso(start);
    recordsForm.elements.EndTime.value = iso(new Date(Math.max(end, start.getTime() + 1000)));
    recordsForm.elements.AccountName.value = show(session.user);
    recordsForm.elements.HostAddress.value = show(session.ipAddress);
    state.records.page = 1;
    showView('records');
  }

  const sessionsLoad = pagedTable('sessions', '/v1/session-logs', 'sessions', (s) => {
    const open = element('button', s.sessionId, 'session-open');
    open.type = 'button';
    open.title = 'Records of this user and address while the session was open';
    open.addEventListener('click', () => openSession(s));
    return [open, s.user, s.ipAddress, s.userAgent, s.startTime, s.endTime === null ? 'open' : s.endTime, s.type];
  });
  loaders.sessions = async function () {
    await sessionsLoad();
    loaded('sessions');
  };

  const aclLoad = pagedTable('acl', '/api/v1/acl-log', 'entries', (e) => [
    e.time, e.action, e.reason, e.object, e.username || e.user, clientText(e.client), e.mode,
    e.source,
  ]);
  const logsLoad = pagedTable('logs', '/v1/logs', 'logs', (e) => [
    e.timestamp, e.action, e.user, e.resource, e.status, e.details,
  ]);
  loaders.security = async function () {
    await Promise.all([aclLoad(), logsLoad()]);
    loaded('security');
  };

  // ---- observe report ---------------------------------------------------------------------

  const reportForm = $('report-form');
  const counted = (pairs) => (pairs || []).map((pair) => show(pair[0]) + ' ×' + show(pair[1])).join(', ');

  loaders.report = async function () {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(reportForm)) {
      if (String(value).trim() !== '') params.set(name, String(value).trim());
    }
    const report = await api('/api/v1/report?' + params);
    const denials = report.denials || [];
    fill('denials-table', denials.map((g) => [
      g.user, g.reason, g.command, g.pattern, g.count, g.first, g.last, (g.clients || []).join(' '),
      g.users_file_line ? g.users_file_line.number + ': ' + show(g.users_file_line.text) : '',
    ]));
    fill('users-table', Object.entries(report.users || {}).map(([user, activity]) => [
      user, activity.commands, counted(activity.top_commands), counted(activity.top_key_prefixes),
    ]));
    $('report-status').textContent = show(report.lines) + ' lines read · ' + denials.length +
      ' denial groups' + (report.truncated ? ' · more than 10,000 groups: the rest under (other)' : '');
    loaded('report');
  };
  reportForm.addEventListener('submit', (event) => {
    event.preventDefault();
    showView('report');
  });

  // ---- live counters from /metrics --------------------------------------------------------

  /** The sums the console shows from one scrape of the Prometheus text. */
  function parseMetrics(text) {
    const sums = { denials: 0, drops: 0 };
    CLASSES.forEach((c) => { sums[c] = 0; });
    for (const line of text.split('\n')) {
      const match = /^redis_audit_proxy_([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
      if (!match) continue;
      const value = Number(match[3]);
      if (!Number.isFinite(value)) continue;
      if (match[1] === 'commands_total') {
        const label = /class="([a-z_]+)"/.exec(match[2] || '');
        if (label && label[1] in sums) sums[label[1]] += value;
      } else if (match[1] === 'acl_denials_total') {
        sums.denials += value;
      } else if (match[1] === 'audit_events_dropped_total') {
        sums.drops += value;
      }
    }
    return sums;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  function drawChart() {
    const chart = $('live-chart');
    const history = state.live.history;
    const top = Math.max(1, ...history.flatMap((point) => CLASSES.map((c) => point[c])));
    const x = (at) => (600 * at) / (LIVE_POINTS - 1);
    const y = (value) => 155 - (150 * value) / top;
    const nodes = [svg('line', { x1: 0, y1: 155, x2: 600, y2: 155 })];
    // Outside the SVG: the chart stretches to the width, text in it would too.
    $('live-scale').textContent = 'Scale: 0 to ' + top.toFixed(1) + ' commands/s, last ' +
      history.length + ' scrapes';
    for (const c of CLASSES) {
      const offset = LIVE_POINTS - history.length;
      const points = history.map((point, at) => x(offset + at).toFixed(1) + ',' + y(point[c]).toFixed(1));
      nodes.push(svg('polyline', { class: c, points: points.join(' ') }));
    }
    chart.replaceChildren(...nodes);
  }

  async function scrape() {
    const sums = parseMetrics(await api('/metrics'));
    const now = performance.now();
    const last = state.live.last;
    state.live.last = { at: now, sums };
    $('live-denials').textContent = String(sums.denials);
    $('live-drops').textContent = String(sums.drops);
    if (last) {
      const seconds = Math.max(0.001, (now - last.at) / 1000);
      const point = {};
      for (const c of CLASSES) {
        // A restarted proxy starts its counters again: no negative rate.
        point[c] = Math.max(0, sums[c] - last.sums[c]) / seconds;
        $('live-' + c).textContent = point[c].toFixed(1);
      }
      state.live.history.push(point);
      if (state.live.history.length > LIVE_POINTS) state.live.history.shift();
      drawChart();
    }
    loaded('live');
  }

  function stopLive() {
    if (state.live.timer !== null) clearInterval(state.live.timer);
    state.live.timer = null;
  }

  loaders.live = async function () {
    stopLive();
    state.live.last = null;
    await scrape();
    state.live.timer = setInterval(() => guarded(scrape), LIVE_MS);
  };

  // ---- start ------------------------------------------------------------------------------

  // Without keys stored, try anyway: a plane without API keys answers, one with them says 401
  // and the login form appears.
  showView('records');
})();
