// business2api admin panel: a small single-page app over the admin JSON API. No framework, no
// build step, nothing loaded from elsewhere; the page's CSP allows scripts from the gateway only.
'use strict';
(function () {
  const I18N = window.B2A_I18N || { en: {} };
  const LANGS = [['en', 'English'], ['zh-CN', '简体中文']];
  const PAGES = ['overview', 'accounts', 'workers', 'flow', 'proxies', 'logs', 'usage', 'keys', 'playground'];
  const S = { csrf: null, lang: pickLang(), cleanup: [], page: null };

  function pickLang() {
    const saved = localStorage.getItem('b2a.lang');
    if (saved && I18N[saved]) return saved;
    const nav = (navigator.language || 'en').toLowerCase();
    return nav.startsWith('zh') ? 'zh-CN' : 'en';
  }

  function t(key, vars) {
    let s = (I18N[S.lang] && I18N[S.lang][key]) || I18N.en[key] || key;
    if (vars) for (const k of Object.keys(vars)) s = s.split('{' + k + '}').join(String(vars[k]));
    return s;
  }

  // --- DOM helpers ---------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const svgNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') el.textContent = v; else el.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c) el.append(c);
    return el;
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function msg(el, text, kind) { clear(el).append(h('div', { class: 'msg ' + (kind || 'info'), role: 'status', text })); }
  function fmtNum(n) { return (n === null || n === undefined) ? '—' : Number(n).toLocaleString(S.lang); }
  function fmtTime(ms) { return ms ? new Date(ms).toLocaleString(S.lang) : t('common.never'); }
  function fmtDur(ms) {
    if (ms <= 0) return '0s';
    let sec = Math.ceil(ms / 1000);
    const d = Math.floor(sec / 86400); sec %= 86400;
    const hh = Math.floor(sec / 3600); sec %= 3600;
    const mm = Math.floor(sec / 60); sec %= 60;
    return (d ? d + 'd ' : '') + (d || hh ? hh + 'h ' : '') + (d || hh || mm ? mm + 'm ' : '') + sec + 's';
  }

  // --- API -----------------------------------------------------------------------------------
  async function api(method, path, body, extra) {
    const headers = { 'accept': 'application/json' };
    let payload;
    if (method !== 'GET' && S.csrf) headers['x-csrf-token'] = S.csrf;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) { headers['content-type'] = 'application/json'; payload = JSON.stringify(body); }
    const r = await fetch(path, Object.assign({ method, headers, body: payload, credentials: 'same-origin' }, extra || {}));
    let data = null;
    const text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text.slice(0, 300) }; }
    if (r.status === 401 && !path.startsWith('/admin/login')) { S.csrf = null; boot(t('common.session_expired')); }
    return { status: r.status, ok: r.ok, data, headers: r.headers };
  }
  function errText(r) {
    const e = r.data && (r.data.error || r.data.message);
    return (typeof e === 'string' ? e : (e && e.message) || JSON.stringify(r.data)) + ' (HTTP ' + r.status + ')';
  }

  // --- start: setup, login or the app ---------------------------------------------------------
  async function boot(notice) {
    stopPage();
    const r = await fetch('/admin/session', { credentials: 'same-origin' }).then(x => x.json()).catch(() => null);
    const root = clear(document.getElementById('app'));
    document.documentElement.lang = S.lang;
    document.title = t('app.title');
    if (!r) { root.append(h('p', { class: 'msg error', text: t('common.error') })); return; }
    if (r.setup_required) return setupView(root);
    if (!r.authenticated) return loginView(root, notice);
    S.csrf = r.csrf;
    shell(root);
  }

  function langSelect() {
    return h('select', { 'aria-label': t('common.language'), id: 'lang', onchange: e => {
      S.lang = e.target.value; localStorage.setItem('b2a.lang', S.lang); boot();
    } }, LANGS.map(([v, n]) => h('option', { value: v, selected: v === S.lang }, n)));
  }

  function card(title, ...body) { return h('section', { class: 'card' }, title ? h('h2', { text: title }) : null, ...body); }

  function authFrame(root, title, form) {
    root.append(h('main', { class: 'auth' }, h('div', { class: 'auth-top' }, h('strong', { text: t('app.title') }), langSelect()),
      card(title, form)));
  }

  function setupView(root) {
    const out = h('div');
    const form = h('form', { id: 'setup-form', onsubmit: async e => {
      e.preventDefault();
      const f = e.target;
      if (f.password.value.length < 10) return msg(out, t('setup.short'), 'error');
      if (f.password.value !== f.repeat.value) return msg(out, t('setup.mismatch'), 'error');
      const r = await api('POST', '/admin/setup', { token: f.token.value.trim(), password: f.password.value });
      if (r.ok) { S.csrf = r.data.csrf; boot(); } else if (r.status === 429) msg(out, t('login.limited', { s: r.headers.get('retry-after') }), 'error');
      else msg(out, errText(r), 'error');
    } },
    h('p', { text: t('setup.intro') }),
    h('label', {}, t('setup.token'), h('input', { name: 'token', id: 'setup-token', required: true, autocomplete: 'off', spellcheck: 'false' })),
    h('label', {}, t('setup.password'), h('input', { name: 'password', id: 'setup-password', type: 'password', required: true, minlength: '10', autocomplete: 'new-password' })),
    h('label', {}, t('setup.repeat'), h('input', { name: 'repeat', id: 'setup-repeat', type: 'password', required: true, minlength: '10', autocomplete: 'new-password' })),
    h('button', { type: 'submit', class: 'primary', text: t('setup.submit') }), out);
    authFrame(root, t('setup.title'), form);
  }

  function loginView(root, notice) {
    const out = h('div');
    if (notice) msg(out, notice, 'info');
    const form = h('form', { id: 'login-form', onsubmit: async e => {
      e.preventDefault();
      const r = await api('POST', '/admin/login', { password: e.target.password.value });
      if (r.ok) { S.csrf = r.data.csrf; boot(); } else if (r.status === 429) msg(out, t('login.limited', { s: r.headers.get('retry-after') }), 'error');
      else msg(out, errText(r), 'error');
    } },
    h('label', {}, t('login.password'), h('input', { name: 'password', id: 'login-password', type: 'password', required: true, autocomplete: 'current-password' })),
    h('button', { type: 'submit', class: 'primary', text: t('login.submit') }), out);
    authFrame(root, t('login.title'), form);
  }

  // --- the app shell --------------------------------------------------------------------------
  function shell(root) {
    const nav = h('nav', { class: 'nav', 'aria-label': 'main' }, PAGES.map(p =>
      h('a', { href: '#' + p, id: 'nav-' + p, 'data-page': p, text: t('nav.' + p) })));
    const logout = h('button', { id: 'logout', class: 'ghost', text: t('common.logout'), onclick: async () => {
      await api('POST', '/admin/logout');
      S.csrf = null; boot();
    } });
    root.append(h('header', { class: 'top' }, h('strong', { class: 'brand', text: t('app.title') }), h('span', { class: 'grow' }), langSelect(), logout), nav,
      h('main', { id: 'page', class: 'page' }));
    window.onhashchange = route;
    route();
  }

  function stopPage() {
    for (const f of S.cleanup.splice(0)) { try { f(); } catch (_) { /* already stopped */ } }
  }
  function every(ms, f) { const id = setInterval(f, ms); S.cleanup.push(() => clearInterval(id)); }

  function route() {
    stopPage();
    const page = (location.hash || '#overview').slice(1);
    const name = PAGES.includes(page) ? page : 'overview';
    S.page = name;
    document.querySelectorAll('.nav a').forEach(a => a.classList.toggle('active', a.dataset.page === name));
    const el = document.getElementById('page');
    if (!el) return;
    clear(el).setAttribute('data-page', name);
    el.append(h('h1', { text: t('nav.' + name) }));
    VIEWS[name](el);
  }

  // A table from rows of cells; on a phone each row becomes a card (CSS, with data-label).
  function table(headers, rows, cls) {
    return h('div', { class: 'table-wrap' }, h('table', { class: cls || '' },
      h('thead', {}, h('tr', {}, headers.map(x => h('th', { text: x })))),
      h('tbody', {}, rows.map(r => h('tr', {}, r.map((c, i) => h('td', { 'data-label': headers[i] }, c)))))));
  }

  // Generic rendering of any JSON (workers, tasks, proxies): arrays of objects as tables.
  function jsonView(v) {
    if (Array.isArray(v)) {
      if (!v.length) return h('p', { class: 'muted', text: t('common.none') });
      if (v.every(x => x && typeof x === 'object' && !Array.isArray(x))) {
        const keys = [...new Set(v.flatMap(Object.keys))].slice(0, 10);
        return table(keys, v.map(o => keys.map(k => cell(o[k]))));
      }
      return h('span', { text: v.map(x => typeof x === 'object' ? JSON.stringify(x) : String(x)).join(', ') });
    }
    if (v && typeof v === 'object') {
      return h('dl', { class: 'kv' }, Object.entries(v).map(([k, x]) => [h('dt', { text: k }), h('dd', {}, typeof x === 'object' && x !== null ? jsonView(x) : cell(x))]));
    }
    return cell(v);
  }
  function cell(x) {
    if (x === null || x === undefined) return '—';
    if (typeof x === 'object') return h('code', { class: 'small', text: JSON.stringify(x) });
    if (typeof x === 'number' && x > 1.5e12 && x < 5e12) return fmtTime(x);
    return String(x);
  }

  // --- overview -------------------------------------------------------------------------------
  function stateBadge(state) { return h('span', { class: 'badge st-' + state, text: t('state.' + state) }); }
  function countdown(until) { return h('span', { class: 'countdown', 'data-until': String(until), text: fmtDur(until - Date.now()) }); }
  function tickCountdowns() {
    const now = Date.now();
    document.querySelectorAll('.countdown').forEach(el => {
      const left = Number(el.dataset.until) - now;
      el.textContent = left > 0 ? fmtDur(left) : '—';
    });
  }

  function stat(label, value, id) { return h('div', { class: 'stat', id }, h('span', { class: 'stat-v', text: value }), h('span', { class: 'stat-l', text: label })); }

  function VIEW_overview(el) {
    const stats = h('div', { class: 'stats' });
    const list = h('div', { class: 'accounts', id: 'account-list' });
    const updated = h('p', { class: 'muted small' });
    el.append(stats, list, updated);
    async function load() {
      const [st, ac] = await Promise.all([api('GET', '/admin/status'), api('GET', '/admin/accounts')]);
      if (!st.ok || !ac.ok) { msg(list, errText(st.ok ? ac : st), 'error'); return; }
      const d = st.data;
      clear(stats).append(stat(t('ov.mode'), d.mode), stat(t('ov.total'), fmtNum(d.total)), stat(t('ov.ready'), fmtNum(d.ready), 'stat-ready'),
        stat(t('ov.pending'), fmtNum(d.pending)), stat(t('ov.requests'), fmtNum(d.total_requests)), stat(t('ov.success_rate'), d.success_rate),
        stat(t('ov.available_today'), fmtNum(d.available_today)));
      clear(list);
      const accounts = ac.data.accounts || [];
      if (!accounts.length) list.append(h('p', { class: 'muted', text: t('ov.no_accounts') }));
      for (const a of accounts) {
        const cds = [];
        for (const cap of ['text', 'image', 'video']) {
          const c = a.cooldowns && a.cooldowns[cap];
          if (c && c.until > Date.now()) cds.push(h('span', { class: 'cd' }, t('cap.' + cap) + ' ', countdown(c.until), c.reason ? ' (' + (c.reason.kind || c.reason.type || JSON.stringify(c.reason)) + ')' : ''));
        }
        if (a.state === 'cooling_down' && a.state_until) cds.push(h('span', { class: 'cd' }, countdown(a.state_until)));
        const le = a.last_error;
        list.append(h('article', { class: 'acc', 'data-email': a.email, 'data-state': a.state },
          h('div', { class: 'acc-head' }, h('strong', { class: 'acc-email', text: a.email }), stateBadge(a.state)),
          a.state_reason ? h('p', { class: 'small muted', text: a.state_reason }) : null,
          h('div', { class: 'acc-row' },
            h('span', {}, t('ov.success') + ': ' + fmtNum(a.counters && a.counters.success)),
            h('span', {}, t('ov.failed') + ': ' + fmtNum(a.counters && a.counters.failed)),
            h('span', {}, t('ov.last_used') + ': ' + fmtTime(a.last_used))),
          cds.length ? h('div', { class: 'acc-row' }, h('span', { class: 'muted', text: t('ov.cooldowns') + ':' }), cds) : null,
          a.task ? h('div', { class: 'acc-row small' }, t('ov.task') + ': ', h('code', { text: a.task.status || a.task.state || JSON.stringify(a.task) })) : null,
          le ? h('div', { class: 'acc-err small' }, t('ov.last_error') + ' (' + fmtTime(le.at) + ', ' + le.kind + '): ' + le.message) : null));
      }
      updated.textContent = t('ov.updated', { t: new Date().toLocaleTimeString(S.lang) });
    }
    load();
    every(3000, load);
    every(1000, tickCountdowns);
  }

  // --- accounts -------------------------------------------------------------------------------
  function VIEW_accounts(el) {
    const out = h('div', { id: 'import-result' });
    const input = h('input', { type: 'file', id: 'import-files', multiple: true, accept: '.json,application/json', class: 'visually-hidden' });
    const drop = h('div', { class: 'drop', id: 'drop-zone', tabindex: '0' }, h('p', { text: t('acc.drop') }),
      h('button', { type: 'button', class: 'primary', text: t('acc.choose'), onclick: () => input.click() }), input);
    async function upload(files) {
      if (!files || !files.length) return;
      const fd = new FormData();
      for (const f of files) fd.append('file', f, f.name);
      msg(out, t('common.loading'));
      const r = await api('POST', '/admin/pool-files/import', fd);
      if (!r.data || !r.data.imported) return msg(out, errText(r), 'error');
      clear(out);
      if (r.data.imported.length) out.append(h('div', { class: 'msg ok', text: t('acc.imported', { list: r.data.imported.map(i => i.email + ' (' + i.result + ')').join(', ') }) }));
      if (r.data.rejected.length) out.append(h('div', { class: 'msg error', text: t('acc.rejected', { list: r.data.rejected.map(i => i.name + ': ' + i.reason).join('; ') }) }));
      loadList();
    }
    input.addEventListener('change', () => { upload(input.files); input.value = ''; });
    drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', e => { e.preventDefault(); drop.classList.remove('over'); upload(e.dataTransfer.files); });

    const invalidOut = h('div', { id: 'invalid-result' });
    const preview = async () => {
      const r = await api('POST', '/admin/pool-files/delete-invalid/preview');
      if (!r.ok) return msg(invalidOut, errText(r), 'error');
      clear(invalidOut);
      if (!r.data.count) return msg(invalidOut, t('acc.nothing_invalid'), 'ok');
      invalidOut.append(table([t('acc.email'), t('acc.state')], r.data.accounts.map(a => [a.email, a.reason])),
        h('button', { class: 'danger', text: t('acc.execute', { n: r.data.count }), onclick: async () => {
          const x = await api('POST', '/admin/pool-files/delete-invalid/execute', { emails: r.data.accounts.map(a => a.email) });
          msg(invalidOut, x.ok ? t('acc.deleted', { n: x.data.count }) : errText(x), x.ok ? 'ok' : 'error');
          loadList();
        } }));
    };
    const actionOut = h('div', { id: 'action-result' });
    const listEl = h('div');
    async function loadList() {
      const r = await api('GET', '/admin/accounts');
      if (!r.ok) return msg(listEl, errText(r), 'error');
      const rows = (r.data.accounts || []).map(a => {
        const otp = h('input', { class: 'otp', placeholder: t('acc.otp'), inputmode: 'numeric', 'aria-label': t('acc.otp') + ' ' + a.email });
        return [a.email, stateBadge(a.state), h('div', { class: 'actions' },
          h('button', { class: 'ghost', text: t('acc.relogin'), onclick: async () => {
            const x = await api('POST', '/admin/browser-refresh', { email: a.email });
            msg(actionOut, x.ok ? t('acc.relogin_queued', { email: a.email }) : errText(x), x.ok ? 'ok' : 'error');
          } }),
          h('form', { class: 'inline', onsubmit: async e => {
            e.preventDefault();
            const x = await api('POST', '/admin/accounts/' + encodeURIComponent(a.email) + '/otp', { code: otp.value.trim() });
            msg(actionOut, x.ok ? t('acc.otp_sent', { email: a.email }) : errText(x), x.ok ? 'ok' : 'error');
            if (x.ok) otp.value = '';
          } }, otp, h('button', { class: 'ghost', type: 'submit', text: t('acc.otp_send') })))];
      });
      clear(listEl).append(rows.length ? table([t('acc.email'), t('acc.state'), t('acc.actions')], rows) : h('p', { class: 'muted', text: t('ov.no_accounts') }));
    }
    el.append(card(t('acc.import'), drop, out,
        h('div', { class: 'row' }, h('a', { class: 'button ghost', id: 'export', href: '/admin/pool-files/export', download: 'accounts-export.json', text: t('acc.export') }))),
      card(t('acc.list'), actionOut, listEl),
      card(t('acc.invalid'), h('div', { class: 'row' },
        h('button', { id: 'invalid-preview', class: 'ghost', text: t('acc.preview'), onclick: preview })), invalidOut));
    loadList();
  }

  // --- workers, flow, proxies -----------------------------------------------------------------
  function jsonPage(el, parts, refreshMs) {
    const boxes = parts.map(([title, path]) => { const b = h('div'); el.append(card(title, b)); return [path, b]; });
    async function load() {
      for (const [path, b] of boxes) {
        const r = await api('GET', path);
        clear(b).append(r.ok ? jsonView(r.data) : h('div', { class: 'msg error', text: r.status === 404 ? t('common.not_available') : errText(r) }));
      }
    }
    load();
    if (refreshMs) every(refreshMs, load);
    return load;
  }

  function VIEW_workers(el) { jsonPage(el, [[t('wk.title'), '/admin/workers'], [t('wk.tasks'), '/admin/tasks']], 3000); }

  function VIEW_flow(el) {
    const out = h('div');
    const box = h('div');
    async function load() {
      const r = await api('GET', '/admin/flow/status');
      clear(box);
      if (!r.ok) return box.append(h('div', { class: 'msg error', text: errText(r) }));
      if (!r.data.enabled) return box.append(h('p', { class: 'muted', text: t('fl.disabled') }));
      const { tokens, ...summary } = r.data;
      box.append(jsonView(summary), table(['id', 'state', 'email', 'errors', ''], (tokens || []).map(x => [
        cell(x.id || x.token_id), cell(x.state), cell(x.email), cell(x.error_count),
        h('button', { class: 'ghost', text: t('fl.remove'), onclick: async () => {
          const y = await api('POST', '/admin/flow/remove-token', { token_id: x.id || x.token_id });
          msg(out, y.ok ? t('common.done') : errText(y), y.ok ? 'ok' : 'error'); load();
        } })])));
    }
    const form = h('form', { class: 'row', onsubmit: async e => {
      e.preventDefault();
      const r = await api('POST', '/admin/flow/add-token', { token: e.target.token.value.trim() });
      msg(out, r.ok ? t('fl.added') : errText(r), r.ok ? 'ok' : 'error');
      if (r.ok) e.target.reset();
      load();
    } }, h('input', { name: 'token', placeholder: t('fl.token'), autocomplete: 'off', required: true }), h('button', { class: 'primary', type: 'submit', text: t('fl.add') }),
    h('button', { class: 'ghost', type: 'button', text: t('fl.reload'), onclick: async () => {
      const r = await api('POST', '/admin/flow/reload'); msg(out, r.ok ? t('common.done') : errText(r), r.ok ? 'ok' : 'error'); load();
    } }));
    el.append(card(t('fl.title'), form, out, box));
    load();
  }

  function VIEW_proxies(el) {
    const out = h('div');
    el.append(h('div', { class: 'row' }, h('button', { class: 'primary', id: 'proxies-check', text: t('px.check'), onclick: async () => {
      msg(out, t('common.loading'));
      const r = await api('POST', '/admin/proxies/check');
      msg(out, r.ok ? t('px.checked') : errText(r), r.ok ? 'ok' : 'error');
      load();
    } })), out);
    const load = jsonPage(el, [[t('px.title'), '/admin/proxies']], 0);
  }

  // --- live logs ------------------------------------------------------------------------------
  function VIEW_logs(el) {
    const view = h('pre', { class: 'logs', id: 'log-view', 'aria-live': 'polite' });
    const status = h('span', { class: 'badge', id: 'log-status', text: t('lg.disconnected') });
    const filter = h('input', { placeholder: t('lg.filter'), id: 'log-filter', 'aria-label': t('lg.filter') });
    const follow = h('input', { type: 'checkbox', checked: true, id: 'log-follow' });
    let paused = false;
    let lastSeq = 0;
    const pause = h('button', { class: 'ghost', text: t('lg.pause'), onclick: () => { paused = !paused; pause.textContent = t(paused ? 'lg.resume' : 'lg.pause'); } });
    const MAX = 2000;
    function matches(line) { const f = filter.value.trim().toLowerCase(); return !f || line.toLowerCase().includes(f); }
    function add(line, cls) {
      const div = h('div', { class: 'log-line ' + (cls || levelClass(line)), text: line });
      if (!matches(line)) div.hidden = true;
      view.append(div);
      while (view.childNodes.length > MAX) view.removeChild(view.firstChild);
      if (follow.checked) view.scrollTop = view.scrollHeight;
    }
    function levelClass(line) { return / ERROR /.test(line) ? 'lv-error' : / WARN /.test(line) ? 'lv-warn' : / DEBUG /.test(line) ? 'lv-debug' : ''; }
    filter.addEventListener('input', () => view.querySelectorAll('.log-line').forEach(d => { d.hidden = !matches(d.textContent); }));
    el.append(h('div', { class: 'row' }, status, filter, pause, h('label', { class: 'check' }, follow, t('lg.follow')),
      h('button', { class: 'ghost', text: t('lg.clear'), onclick: () => clear(view) })), view);
    api('GET', '/admin/logs').then(r => {
      if (!r.ok) return add(errText(r), 'lv-error');
      if (!r.data.capturing) add(t('lg.not_capturing'), 'lv-warn');
      for (const l of r.data.lines) { if (l.seq > lastSeq) { lastSeq = l.seq; add(l.line); } }
      const es = new EventSource('/admin/logs/stream');
      S.cleanup.push(() => es.close());
      es.onopen = () => { status.textContent = t('lg.connected'); status.className = 'badge st-ready'; };
      es.onerror = () => { status.textContent = t('lg.disconnected'); status.className = 'badge st-cooling_down'; };
      es.addEventListener('line', e => {
        const l = JSON.parse(e.data);
        if (l.seq <= lastSeq) return;
        lastSeq = l.seq;
        if (!paused) add(l.line);
      });
      es.addEventListener('lagged', e => add(t('lg.lagged', { n: JSON.parse(e.data).missed }), 'lv-warn'));
    });
  }

  // --- usage charts ---------------------------------------------------------------------------
  // A bar chart of series over labels, as inline SVG (stacked when several series).
  function barChart(labels, series, title) {
    const W = 640, H = 220, P = { l: 44, r: 8, t: 10, b: 28 };
    const totals = labels.map((_, i) => series.reduce((a, sr) => a + (sr.values[i] || 0), 0));
    const max = Math.max(1, ...totals);
    const bw = (W - P.l - P.r) / Math.max(1, labels.length);
    const y = v => H - P.b - (v / max) * (H - P.t - P.b);
    const g = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      g.append(s('line', { x1: P.l, x2: W - P.r, y1: y(v), y2: y(v), class: 'grid' }),
        s('text', { x: P.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis', text: v >= 1000 ? Math.round(v / 100) / 10 + 'k' : String(Math.round(v)) }));
    }
    labels.forEach((lab, i) => {
      let base = 0;
      series.forEach((sr, j) => {
        const v = sr.values[i] || 0;
        if (v > 0) {
          const r = s('rect', { x: P.l + i * bw + bw * 0.12, width: Math.max(1, bw * 0.76), y: y(base + v), height: y(base) - y(base + v), class: 'bar b' + j });
          r.append(s('title', { text: `${lab}: ${sr.name} ${v}` }));
          g.append(r);
        }
        base += v;
      });
      if (labels.length <= 12 || i % Math.ceil(labels.length / 12) === 0) g.append(s('text', { x: P.l + i * bw + bw / 2, y: H - 10, 'text-anchor': 'middle', class: 'axis', text: lab }));
    });
    const legend = h('div', { class: 'legend' }, series.map((sr, j) => h('span', {}, h('i', { class: 'sw b' + j }), sr.name)));
    return h('figure', { class: 'chart-box' }, h('figcaption', { text: title }), g, legend);
  }
  function hbars(entries, title) {
    const max = Math.max(1, ...entries.map(e => e[1]));
    return h('figure', { class: 'chart-box' }, h('figcaption', { text: title }), h('div', { class: 'hbars' }, entries.map(([name, v]) => {
      const bar = h('span', { class: 'hbar-fill' });
      bar.style.width = (100 * v / max).toFixed(1) + '%';
      return h('div', { class: 'hbar' }, h('span', { class: 'hbar-name', text: name }), h('span', { class: 'hbar-track' }, bar), h('span', { class: 'hbar-v', text: fmtNum(v) }));
    })));
  }

  // Requests per hour split by `field` ('models' or 'keys'): the four busiest names, the rest
  // together as one more series.
  function hourlyBy(hourly, field) {
    const totals = {};
    for (const x of hourly) for (const [k, v] of Object.entries(x[field] || {})) totals[k] = (totals[k] || 0) + v;
    const top = Object.entries(totals).sort((a, b) => b[1] - a[1]).slice(0, 4).map(e => e[0]);
    const series = top.map(name => ({ name, values: hourly.map(x => (x[field] || {})[name] || 0) }));
    const rest = hourly.map(x => Object.entries(x[field] || {}).reduce((a, [k, v]) => top.includes(k) ? a : a + v, 0));
    if (rest.some(v => v > 0)) series.push({ name: t('us.rest'), values: rest });
    return series;
  }

  function VIEW_usage(el) {
    const box = h('div');
    el.append(box);
    async function load() {
      const r = await api('GET', '/admin/stats');
      clear(box);
      if (!r.ok) return box.append(h('div', { class: 'msg error', text: errText(r) }));
      const d = r.data;
      box.append(h('div', { class: 'stats' },
        stat(t('us.requests'), fmtNum(d.total_requests)), stat(t('us.success'), fmtNum(d.success_requests)), stat(t('us.failed'), fmtNum(d.failed_requests)),
        stat(t('us.rate'), d.success_rate), stat(t('us.input'), fmtNum(d.input_tokens)), stat(t('us.output'), fmtNum(d.output_tokens)),
        stat(t('us.images'), fmtNum(d.images_generated)), stat(t('us.videos'), fmtNum(d.videos_generated)),
        stat(t('us.rpm'), fmtNum(d.current_rpm) + ' / ' + fmtNum(d.average_rpm)), stat(t('us.uptime'), d.uptime || fmtDur((d.uptime_seconds || 0) * 1000))));
      const hourly = Array.isArray(d.hourly) ? d.hourly : [];
      if (!hourly.length) box.append(h('p', { class: 'muted', text: t('us.no_data') }));
      else {
        const labels = hourly.map(x => { const dt = new Date(x.hour); return isNaN(dt) ? String(x.hour) : String(dt.getHours()).padStart(2, '0') + ':00'; });
        box.append(h('div', { class: 'grid2' },
          barChart(labels, [{ name: t('us.success'), values: hourly.map(x => x.success || 0) }, { name: t('us.failed'), values: hourly.map(x => x.failed || 0) }], t('us.hourly')),
          barChart(labels, [{ name: t('us.input'), values: hourly.map(x => x.input_tokens || 0) }, { name: t('us.output'), values: hourly.map(x => x.output_tokens || 0) }], t('us.tokens_hourly'))),
          h('div', { class: 'grid2' },
            barChart(labels, hourlyBy(hourly, 'models'), t('us.models_hourly')),
            barChart(labels, hourlyBy(hourly, 'keys'), t('us.keys_hourly'))));
      }
      const models = Object.entries(d.models || {}).map(([m, v]) => [m, v.requests || 0]).sort((a, b) => b[1] - a[1]);
      const keys = Object.entries(d.keys || {}).map(([k, v]) => [k, v.requests || 0]).sort((a, b) => b[1] - a[1]);
      box.append(h('div', { class: 'grid2' }, models.length ? hbars(models, t('us.models')) : null, keys.length ? hbars(keys, t('us.keys')) : null));
      if (models.length) {
        box.append(card(t('us.models'), table([t('us.model'), t('us.requests'), t('us.rate'), t('us.input'), t('us.output'), t('us.images')],
          Object.entries(d.models).map(([m, v]) => [m, fmtNum(v.requests), v.success_rate || '—', fmtNum(v.input_tokens), fmtNum(v.output_tokens), fmtNum(v.images)]))));
      }
    }
    load();
    every(15000, load);
  }

  // --- API keys -------------------------------------------------------------------------------
  function keyForm(initial, onSubmit, submitText) {
    const i = initial || {};
    return h('form', { class: 'keyform', onsubmit: e => {
      e.preventDefault();
      const f = e.target;
      const num = v => v.trim() === '' ? null : Number(v);
      const models = f.models.value.split(',').map(x => x.trim()).filter(Boolean);
      onSubmit({ name: f.name.value.trim(), models: models.length ? models : null, rpm: num(f.rpm.value), tokens_per_day: num(f.tpd.value) });
    } },
    h('label', {}, t('ky.name'), h('input', { name: 'name', required: true, value: i.name || '' })),
    h('label', {}, t('ky.models'), h('input', { name: 'models', placeholder: t('ky.models_hint'), value: (i.models || []).join(', ') })),
    h('label', {}, t('ky.rpm'), h('input', { name: 'rpm', type: 'number', min: '1', value: i.rpm ?? '' })),
    h('label', {}, t('ky.tpd'), h('input', { name: 'tpd', type: 'number', min: '1', value: i.tokens_per_day ?? '' })),
    h('button', { class: 'primary', type: 'submit', text: submitText }));
  }

  function VIEW_keys(el) {
    const out = h('div');
    const list = h('div');
    async function load() {
      const r = await api('GET', '/admin/keys');
      clear(list);
      if (!r.ok) return list.append(h('div', { class: 'msg error', text: errText(r) }));
      list.append(table([t('ky.name'), t('ky.prefix'), t('ky.models'), t('ky.rpm'), t('ky.tpd'), t('ky.today'), t('ky.last_used'), ''],
        (r.data.keys || []).map(k => [k.name, h('code', { text: k.prefix }), k.models ? k.models.join(', ') : t('ky.all_models'),
          k.rpm ?? t('ky.unlimited'), k.tokens_per_day ?? t('ky.unlimited'), t('ky.requests_today', { r: fmtNum(k.requests_today), t: fmtNum(k.tokens_today) }),
          k.last_used_at ? fmtTime(typeof k.last_used_at === 'number' && k.last_used_at < 1e12 ? k.last_used_at * 1000 : k.last_used_at) : t('common.never'),
          h('div', { class: 'actions' },
            h('button', { class: 'ghost', text: t('ky.edit'), onclick: ev => {
              const holder = ev.target.closest('td');
              clear(holder).append(keyForm(k, async body => {
                const x = await api('PATCH', '/admin/keys/' + encodeURIComponent(k.id), body);
                msg(out, x.ok ? t('common.done') : errText(x), x.ok ? 'ok' : 'error'); load();
              }, t('common.save')));
            } }),
            h('button', { class: 'danger', text: t('common.delete'), onclick: async () => {
              if (!confirm(t('ky.confirm_delete', { name: k.name }))) return;
              const x = await api('DELETE', '/admin/keys/' + encodeURIComponent(k.id));
              msg(out, x.ok ? t('common.done') : errText(x), x.ok ? 'ok' : 'error'); load();
            } }))])));
    }
    el.append(card(t('ky.create'), keyForm(null, async body => {
      const r = await api('POST', '/admin/keys', body);
      if (!r.ok) return msg(out, errText(r), 'error');
      clear(out).append(h('div', { class: 'msg ok' }, t('ky.secret_once') + ' ', h('code', { class: 'secret', text: r.data.secret })));
      load();
    }, t('ky.create')), out), card(t('ky.title'), list));
    load();
  }

  // --- playground -----------------------------------------------------------------------------
  const DIALECTS = {
    'openai-chat': {
      name: 'OpenAI chat completions',
      request: (model, text) => ['/v1/chat/completions', { model, stream: true, messages: [{ role: 'user', content: text }] }, {}],
      delta: (ev) => { if (ev.data === '[DONE]') return ''; const j = JSON.parse(ev.data); return (j.choices && j.choices[0] && j.choices[0].delta && j.choices[0].delta.content) || ''; }
    },
    'openai-responses': {
      name: 'OpenAI responses',
      request: (model, text) => ['/v1/responses', { model, stream: true, input: text }, {}],
      delta: (ev) => { const j = JSON.parse(ev.data); return j.type === 'response.output_text.delta' ? (j.delta || '') : ''; }
    },
    'anthropic': {
      name: 'Anthropic messages',
      request: (model, text) => ['/v1/messages', { model, stream: true, max_tokens: 2048, messages: [{ role: 'user', content: text }] }, { 'anthropic-version': '2023-06-01' }],
      delta: (ev) => { const j = JSON.parse(ev.data); return j.type === 'content_block_delta' && j.delta && j.delta.type === 'text_delta' ? j.delta.text : ''; }
    },
    'gemini': {
      name: 'Gemini streamGenerateContent',
      request: (model, text) => ['/v1beta/models/' + encodeURIComponent(model) + ':streamGenerateContent?alt=sse', { contents: [{ role: 'user', parts: [{ text }] }] }, {}],
      delta: (ev) => {
        const j = JSON.parse(ev.data);
        const parts = (j.candidates && j.candidates[0] && j.candidates[0].content && j.candidates[0].content.parts) || [];
        return parts.filter(p => !p.thought && typeof p.text === 'string').map(p => p.text).join('');
      }
    }
  };

  // Reads server-sent events from a fetch body as they arrive.
  async function readSse(body, onEvent) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        let event = 'message'; const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          else if (line.startsWith('event:')) event = line.slice(6).trim();
        }
        if (data.length) onEvent({ event, data: data.join('\n') });
      }
    }
  }

  function VIEW_playground(el) {
    const key = h('input', { id: 'pg-key', type: 'password', autocomplete: 'off', value: sessionStorage.getItem('b2a.playground.key') || '' });
    key.addEventListener('change', () => sessionStorage.setItem('b2a.playground.key', key.value.trim()));
    const dialect = h('select', { id: 'pg-dialect' }, Object.entries(DIALECTS).map(([k, d]) => h('option', { value: k, text: d.name })));
    const model = h('select', { id: 'pg-model' });
    const prompt = h('textarea', { id: 'pg-prompt', rows: '3', text: t('pg.default_prompt') });
    const answer = h('div', { class: 'answer', id: 'pg-answer', 'aria-live': 'polite' });
    const info = h('p', { class: 'muted small', id: 'pg-info' });
    const out = h('div');
    let controller = null;
    async function loadModels() {
      const k = key.value.trim();
      if (!k) return msg(out, t('pg.need_key'), 'error');
      sessionStorage.setItem('b2a.playground.key', k);
      const r = await fetch('/v1/models', { headers: { authorization: 'Bearer ' + k } });
      const j = await r.json().catch(() => ({}));
      if (!r.ok) return msg(out, (j.error && (j.error.message || j.error)) + ' (HTTP ' + r.status + ')', 'error');
      clear(out);
      const keep = model.value;
      clear(model).append(...(j.data || []).map(m => h('option', { value: m.id, text: m.id, selected: m.id === keep })));
    }
    const send = h('button', { class: 'primary', id: 'pg-send', text: t('pg.send'), onclick: async () => {
      const k = key.value.trim();
      if (!k) return msg(out, t('pg.need_key'), 'error');
      if (!model.value) await loadModels();
      const d = DIALECTS[dialect.value];
      const [path, body, extra] = d.request(model.value, prompt.value);
      clear(answer); clear(out); answer.classList.add('streaming'); answer.removeAttribute('data-done'); info.textContent = '';
      controller = new AbortController();
      S.cleanup.push(() => controller && controller.abort());
      const started = performance.now();
      let n = 0;
      try {
        const r = await fetch(path, { method: 'POST', signal: controller.signal,
          headers: Object.assign({ 'content-type': 'application/json', 'authorization': 'Bearer ' + k }, extra), body: JSON.stringify(body) });
        if (!r.ok) { msg(out, (await r.text()).slice(0, 500) + ' (HTTP ' + r.status + ')', 'error'); return; }
        await readSse(r.body, ev => {
          let text = '';
          try { text = d.delta(ev); } catch (_) { return; }
          if (ev.event === 'error' || /"error"/.test(ev.data) && !text) { try { const j = JSON.parse(ev.data); if (j.error) msg(out, j.error.message || JSON.stringify(j.error), 'error'); } catch (_) { /* not JSON */ } }
          if (text) { answer.append(text); n += text.length; info.textContent = t('pg.stats', { n, s: ((performance.now() - started) / 1000).toFixed(1) }); }
        });
      } catch (e) {
        if (e.name !== 'AbortError') msg(out, String(e), 'error');
      } finally {
        answer.classList.remove('streaming');
        answer.setAttribute('data-done', 'true');
        controller = null;
      }
    } });
    const stop = h('button', { class: 'ghost', text: t('pg.stop'), onclick: () => controller && controller.abort() });
    el.append(card(null,
      h('label', {}, t('pg.api_key'), key),
      h('div', { class: 'grid2' }, h('label', {}, t('pg.dialect'), dialect), h('label', {}, t('pg.model'), h('div', { class: 'row nowrap' }, model, h('button', { class: 'ghost', id: 'pg-load', text: t('pg.load_models'), onclick: loadModels })))),
      h('label', {}, t('pg.prompt'), prompt),
      h('div', { class: 'row' }, send, stop), out),
      card(t('pg.answer'), answer, info));
    if (key.value) loadModels();
  }

  const VIEWS = {
    overview: VIEW_overview, accounts: VIEW_accounts, workers: VIEW_workers, flow: VIEW_flow, proxies: VIEW_proxies,
    logs: VIEW_logs, usage: VIEW_usage, keys: VIEW_keys, playground: VIEW_playground
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => boot());
  else boot();
})();
