// Helpers shared by the web UI tests (e2e.test.mjs: one node; fleet.test.mjs:
// two nodes sharing PostgreSQL + Redis). node --test runs each test file in a
// process of its own, so the state below (the browser, the sessions, whether
// a step failed) belongs to one file.
//
// Every wait is bounded and polls the page (no sleep is an assertion).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = process.env.ARTIFACTS || path.join(HERE, '..', '..', 'target', 'web-artifacts');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const WAIT_MS = 15000;       // ordinary UI waits
export const RECOVER_MS = 25000;    // reconnect after a restart (client backoff is capped at 10 s)

export const PASSWORD = 'correct horse battery staple';

// The browser, every page opened (by session name), whether a step failed,
// and whether the node is down on purpose (see OUTAGE_NOISE).
export const state = { browser: null, sessions: {}, failed: false, outage: false };
export const sessions = state.sessions;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll `get` until `ok(value)` holds; fail after `timeout` ms with the last value.
export async function eventually(what, get, ok = Boolean, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await get();
      lastErr = undefined;
      if (ok(last)) return last;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const detail = lastErr ? `last error: ${lastErr.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; ${detail}`);
    }
    await sleep(100);
  }
}

// While the node is down the browser logs failed WebSocket connects and failed
// fetches as console errors: expected then (state.outage), and only then.
const OUTAGE_NOISE = [
  /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/,
  /^Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED)/,
];

export async function launchBrowser() {
  mkdirSync(ARTIFACTS, { recursive: true });
  state.browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
  });
  return state.browser;
}

export async function closeBrowser() {
  if (state.browser) await state.browser.close();
}

function newSessionState(name, context) {
  return {
    name, context, page: null,
    consoleErrors: [], pageErrors: [], csp: [], dialogs: [], requests: [], wsSent: [], wsReceived: [],
    wsUrls: [], drop: null, dropped: [],
  };
}

export async function newSession(name, { routeWs = false } = {}) {
  const context = await state.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const s = newSessionState(name, context);
  if (routeWs) {
    // The page's WebSocket goes through the test, which forwards every frame
    // except what s.drop(frame, direction) picks: that one is swallowed, as if
    // the connection had died just before delivering it.
    await context.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        let frame = null;
        try { frame = JSON.parse(m); } catch (e) { /* not JSON */ }
        if (frame) s.wsSent.push({ at: Date.now(), frame });
        if (frame && s.drop && s.drop(frame, 'up')) { s.dropped.push(frame); return; }
        server.send(m);
      });
      server.onMessage((m) => {
        let frame = null;
        try { frame = JSON.parse(m); } catch (e) { /* not JSON */ }
        if (frame) s.wsReceived.push({ at: Date.now(), frame });
        if (frame && s.drop && s.drop(frame, 'down')) { s.dropped.push(frame); return; }
        ws.send(m);
      });
    });
  }
  // securitypolicyviolation events, reported out of the page through a CDP
  // binding (not subject to the page's CSP). Installed before any page script.
  await context.exposeBinding('__e2eReportCsp', (_src, v) => { s.csp.push(v); });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__e2eReportCsp({
        directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample,
        source: e.sourceFile, line: e.lineNumber,
      });
    });
  });
  await openPage(s, { routeWs });
  return s;
}

// Another tab of a session's user: same browser context (CSP reports still
// go to the first tab's session), its own page and sessionStorage, so it
// logs in by itself, as a second device would.
export async function newTab(owner, name) {
  const s = newSessionState(name, owner.context);
  await openPage(s, { routeWs: false });
  return s;
}

// Opens s.page and records what it logs, throws, requests and sends into s.
async function openPage(s, { routeWs }) {
  const page = await s.context.newPage();
  s.page = page;
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (/Content.Security.Policy/i.test(text)) s.csp.push({ console: text });
    if (state.outage && OUTAGE_NOISE.some((re) => re.test(text))) return;
    s.consoleErrors.push(text);
  });
  page.on('pageerror', (err) => s.pageErrors.push(String(err && err.stack || err)));
  page.on('dialog', (d) => { s.dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('request', (r) => s.requests.push(r.url()));
  if (!routeWs) page.on('websocket', (ws) => {
    s.wsUrls.push(ws.url());
    ws.on('framesent', (f) => { try { s.wsSent.push({ at: Date.now(), frame: JSON.parse(f.payload) }); } catch (e) { /* not JSON */ } });
    ws.on('framereceived', (f) => { try { s.wsReceived.push({ at: Date.now(), frame: JSON.parse(f.payload) }); } catch (e) { /* not JSON */ } });
  });
  sessions[s.name] = s;
}

export function assertClean(s) {
  assert.deepEqual(s.pageErrors, [], `${s.name}: uncaught page errors`);
  assert.deepEqual(s.csp, [], `${s.name}: CSP violations`);
  assert.deepEqual(s.consoleErrors, [], `${s.name}: console errors`);
  assert.deepEqual(s.dialogs, [], `${s.name}: dialogs opened`);
}

export async function shot(s, file) {
  await s.page.screenshot({ path: path.join(ARTIFACTS, file) });
}

export const connState = (s) => s.page.$eval('#conn-state', (e) => ({ state: e.dataset.state, text: e.textContent }));

export async function waitConnected(s, timeout = WAIT_MS) {
  await eventually(`${s.name} #conn-state "connected"`, () => connState(s),
    (v) => v.state === 'connected' && v.text === 'connected', timeout);
}

// Confirmed messages as shown: li.msg[data-seq], in DOM order.
export function shown(s) {
  return s.page.$$eval('#messages li.msg[data-seq]', (els) => els.map((e) => ({
    seq: Number(e.dataset.seq), from: e.dataset.from, text: e.querySelector('.text').textContent,
  })));
}

export const countText = (list, text) => list.filter((m) => m.text === text).length;

export async function waitShown(s, text, timeout = WAIT_MS) {
  const list = await eventually(`${s.name} to show ${JSON.stringify(text)}`, () => shown(s),
    (l) => countText(l, text) >= 1, timeout);
  assert.equal(countText(list, text), 1, `${s.name} shows ${JSON.stringify(text)} exactly once`);
  return list.find((m) => m.text === text);
}

export async function send(s, text) {
  const input = s.page.locator('#composer-input');
  await input.fill(text);
  await input.press('Enter');
  await eventually(`${s.name} composer to clear`, () => input.inputValue(), (v) => v === '');
}

// seq 1..n, in order, no duplicate.
export function assertGapless(list, who) {
  assert.deepEqual(list.map((m) => m.seq), list.map((_, i) => i + 1), `${who}: seqs are 1..n in order`);
}

// Steps run in order; once one fails the rest are skipped (they would only
// report the same breakage again). A failure screenshots every page as
// `failure-<prefix><session>.png`.
export function step(name, fn, { failurePrefix = '' } = {}) {
  test(name, { timeout: 90000 }, async (t) => {
    if (state.failed) { t.skip('an earlier step failed'); return; }
    try {
      await fn(t);
    } catch (e) {
      state.failed = true;
      for (const s of Object.values(sessions)) {
        await s.page.screenshot({ path: path.join(ARTIFACTS, `failure-${failurePrefix}${s.name}.png`) }).catch(() => {});
      }
      throw e;
    }
  });
}

export async function register(s) {
  await s.page.fill('#username', s.name);
  await s.page.fill('#password', PASSWORD);
  await s.page.click('#register-btn');
  await s.page.locator('#chat-view').waitFor({ state: 'visible' });
  await eventually(`${s.name} name in the top bar`, () => s.page.textContent('#me-name'), (v) => v === s.name);
  await waitConnected(s);
}

export async function login(s, username) {
  await s.page.fill('#username', username);
  await s.page.fill('#password', PASSWORD);
  await s.page.click('#login-btn');
  await s.page.locator('#chat-view').waitFor({ state: 'visible' });
  await waitConnected(s);
}

export async function joinRoom(s, room) {
  await s.page.fill('#room-input', room);
  await s.page.click('#room-join-btn');
  await eventually(`${s.name} room title`, () => s.page.textContent('#room-title'), (v) => v === `#${room}`);
  await eventually(`${s.name} joined`, () => s.page.textContent('#room-meta'), (v) => /^\d+ online$/.test(v));
  assert.equal(await s.page.locator('#composer-input').isEnabled(), true);
}

// A message row as shown: its text, "(edited)", reaction chips, reply quote.
export const liOf = (s, seq) => s.page.evaluate((q) => {
  const li = document.querySelector(`#messages li.msg[data-seq="${q}"]`);
  if (!li) return null;
  const part = (sel) => { const e = li.querySelector(sel); return e ? e.textContent : null; };
  return { text: part('.text'), edited: part('.edited'), reactions: part('.reactions'), quote: part('.reply-quote') };
}, seq);

export const msgLi = (s, seq) => s.page.locator(`#messages li.msg[data-seq="${seq}"]`);
export const framesSent = (s, type) => s.wsSent.filter((f) => f.frame.type === type).map((f) => f.frame);

// What has keyboard focus: its accessible label, or the seq of a message row.
export const focused = (s) => s.page.evaluate(() => {
  const e = document.activeElement;
  if (!e) return null;
  if (e.matches('li.msg')) return `row ${e.dataset.seq}`;
  return e.getAttribute('aria-label') || e.tagName.toLowerCase();
});

// Hover a row so its actions show, then click the one labelled `name`.
export async function rowAction(s, seq, name) {
  await msgLi(s, seq).hover();
  await msgLi(s, seq).getByRole('button', { name, exact: true }).click();
}

export async function tokenOf(s) { return s.page.evaluate(() => sessionStorage.getItem('parley.token')); }

// The unread and mention counts of a room in the room list, as shown.
export const badge = (s, room) => s.page.evaluate((r) => {
  const b = document.querySelector(`.nav-btn[data-room="${r}"]`);
  return b && { unread: b.querySelector('.badge:not(.mention-badge)').textContent, mentions: b.querySelector('.mention-badge').textContent };
}, room);

export async function openFromList(s, room) {
  await s.page.click(`.nav-btn[data-room="${room}"]`);
  await eventually(`${s.name} to show #${room}`, () => s.page.textContent('#room-title'), (v) => v === `#${room}`);
}
