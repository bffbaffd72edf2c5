// End-to-end test of the Parley web UI in real headless Chromium.
//
// Run it with tests/web/run.sh, which installs Chromium and playwright-core,
// starts a Parley node and sets the environment read below. The steps run in
// order and share two browser sessions (two contexts: alice and bob); a step
// whose predecessor failed is skipped.
//
// Every wait is bounded and polls the page (no sleep is an assertion).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_SH = path.join(HERE, 'node.sh');
const PORT = process.env.E2E_PORT;
const ARTIFACTS = process.env.ARTIFACTS || path.join(HERE, '..', '..', 'target', 'web-artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BASE = `http://127.0.0.1:${PORT}`;

const WAIT_MS = 15000;       // ordinary UI waits
const RECOVER_MS = 25000;    // reconnect after a restart (client backoff is capped at 10 s)

const RUN = Math.random().toString(36).slice(2, 8);
const ROOM = `e2e-${RUN}`;
const PASSWORD = 'correct horse battery staple';

// ---- helpers ------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll `get` until `ok(value)` holds; fail after `timeout` ms with the last value.
async function eventually(what, get, ok = Boolean, timeout = WAIT_MS) {
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

function nodeCtl(cmd) {
  execFileSync('bash', [NODE_SH, cmd], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 30000 });
}

// While the node is down the browser logs failed WebSocket connects and failed
// fetches as console errors: expected then, and only then.
const OUTAGE_NOISE = [
  /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/,
  /^Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED)/,
];
let outage = false;

let browser;
const sessions = {};
let failed = false;

async function newSession(name, { routeWs = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const s = {
    name, context, page: null,
    consoleErrors: [], pageErrors: [], csp: [], dialogs: [], requests: [], wsSent: [], wsReceived: [],
    drop: null, dropped: [],
  };
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
  const page = await context.newPage();
  s.page = page;
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (/Content.Security.Policy/i.test(text)) s.csp.push({ console: text });
    if (outage && OUTAGE_NOISE.some((re) => re.test(text))) return;
    s.consoleErrors.push(text);
  });
  page.on('pageerror', (err) => s.pageErrors.push(String(err && err.stack || err)));
  page.on('dialog', (d) => { s.dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('request', (r) => s.requests.push(r.url()));
  if (!routeWs) page.on('websocket', (ws) => {
    ws.on('framesent', (f) => { try { s.wsSent.push({ at: Date.now(), frame: JSON.parse(f.payload) }); } catch (e) { /* not JSON */ } });
    ws.on('framereceived', (f) => { try { s.wsReceived.push({ at: Date.now(), frame: JSON.parse(f.payload) }); } catch (e) { /* not JSON */ } });
  });
  sessions[name] = s;
  return s;
}

function assertClean(s) {
  assert.deepEqual(s.pageErrors, [], `${s.name}: uncaught page errors`);
  assert.deepEqual(s.csp, [], `${s.name}: CSP violations`);
  assert.deepEqual(s.consoleErrors, [], `${s.name}: console errors`);
  assert.deepEqual(s.dialogs, [], `${s.name}: dialogs opened`);
}

async function shot(s, file) {
  await s.page.screenshot({ path: path.join(ARTIFACTS, file) });
}

const connState = (s) => s.page.$eval('#conn-state', (e) => ({ state: e.dataset.state, text: e.textContent }));

async function waitConnected(s, timeout = WAIT_MS) {
  await eventually(`${s.name} #conn-state "connected"`, () => connState(s),
    (v) => v.state === 'connected' && v.text === 'connected', timeout);
}

// Confirmed messages as shown: li.msg[data-seq], in DOM order.
function shown(s) {
  return s.page.$$eval('#messages li.msg[data-seq]', (els) => els.map((e) => ({
    seq: Number(e.dataset.seq), from: e.dataset.from, text: e.querySelector('.text').textContent,
  })));
}

const countText = (list, text) => list.filter((m) => m.text === text).length;

async function waitShown(s, text, timeout = WAIT_MS) {
  const list = await eventually(`${s.name} to show ${JSON.stringify(text)}`, () => shown(s),
    (l) => countText(l, text) >= 1, timeout);
  assert.equal(countText(list, text), 1, `${s.name} shows ${JSON.stringify(text)} exactly once`);
  return list.find((m) => m.text === text);
}

async function send(s, text) {
  const input = s.page.locator('#composer-input');
  await input.fill(text);
  await input.press('Enter');
  await eventually(`${s.name} composer to clear`, () => input.inputValue(), (v) => v === '');
}

// seq 1..n, in order, no duplicate.
function assertGapless(list, who) {
  assert.deepEqual(list.map((m) => m.seq), list.map((_, i) => i + 1), `${who}: seqs are 1..n in order`);
}

async function restMessages(s) {
  const token = await s.page.evaluate(() => sessionStorage.getItem('parley.token'));
  const resp = await fetch(`${BASE}/api/rooms/${ROOM}/messages?limit=200`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(resp.status, 200, 'GET messages');
  const body = await resp.json();
  return body.messages;
}

// Steps run in order; once one fails the rest are skipped (they would only
// report the same breakage again).
function step(name, fn) {
  test(name, { timeout: 90000 }, async (t) => {
    if (failed) { t.skip('an earlier step failed'); return; }
    try {
      await fn(t);
    } catch (e) {
      failed = true;
      for (const s of Object.values(sessions)) {
        await s.page.screenshot({ path: path.join(ARTIFACTS, `failure-${s.name}.png`) }).catch(() => {});
      }
      throw e;
    }
  });
}

// ---- setup ----------------------------------------------------------------------

before(async () => {
  assert.ok(PORT, 'E2E_PORT is not set: run tests/web/run.sh, which starts the node');
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
  });
  await newSession(`alice-${RUN}`);
  await newSession(`bob-${RUN}`);
});

after(async () => {
  if (browser) await browser.close();
});

const A = () => sessions[`alice-${RUN}`];
const B = () => sessions[`bob-${RUN}`];

// ---- steps ------------------------------------------------------------------------

step('the page loads under its CSP with no console error', async () => {
  for (const s of [A(), B()]) {
    const resp = await s.page.goto(BASE + '/', { waitUntil: 'load' });
    assert.equal(resp.status(), 200);
    const csp = resp.headers()['content-security-policy'] || '';
    assert.match(csp, /script-src 'self'/, 'the page is served with a strict CSP');
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    await s.page.locator('#login-form').waitFor({ state: 'visible' });
    assert.equal(await s.page.locator('#chat-view').isVisible(), false);
    assert.deepEqual(await connState(s), { state: 'offline', text: 'offline' });
  }
  await shot(A(), '01-login.png');
  // Give late errors (a missing asset, a blocked style) a moment to surface.
  await A().page.waitForLoadState('networkidle');
  for (const s of [A(), B()]) assertClean(s);
});

async function register(s) {
  await s.page.fill('#username', s.name);
  await s.page.fill('#password', PASSWORD);
  await s.page.click('#register-btn');
  await s.page.locator('#chat-view').waitFor({ state: 'visible' });
  await eventually(`${s.name} name in the top bar`, () => s.page.textContent('#me-name'), (v) => v === s.name);
  await waitConnected(s);
}

async function joinRoom(s) {
  await s.page.fill('#room-input', ROOM);
  await s.page.click('#room-join-btn');
  await eventually(`${s.name} room title`, () => s.page.textContent('#room-title'), (v) => v === `#${ROOM}`);
  await eventually(`${s.name} joined`, () => s.page.textContent('#room-meta'), (v) => /^\d+ online$/.test(v));
  assert.equal(await s.page.locator('#composer-input').isEnabled(), true);
}

step('two users register, join a room and exchange messages', async () => {
  for (const s of [A(), B()]) await register(s);
  for (const s of [A(), B()]) await joinRoom(s);
  // alice sees bob join (presence) and bob sees alice in the join's member list.
  for (const [s, other] of [[A(), B()], [B(), A()]]) {
    await eventually(`${s.name} member list to show ${other.name}`,
      () => s.page.$$eval('#members li.member', (els) => els.map((e) => e.dataset.user)),
      (users) => users.includes(other.name) && users.includes(s.name));
  }

  const lines = [
    [A(), `hello from alice ${RUN}`],
    [B(), `hi alice, bob here ${RUN}`],
    [A(), 'a longer message that should wrap onto more than one line in the conversation pane, to check that long text reads well and stays inside its bubble without overflowing it at all'],
    [B(), 'unicode: héllo wörld — 你好 — 🎉, and a link: https://example.com/path?q=1'],
  ];
  for (const [from, text] of lines) {
    await send(from, text);
    const own = await waitShown(from, text);
    const theirs = await waitShown(from === A() ? B() : A(), text);
    assert.equal(own.seq, theirs.seq, 'same seq on both sides');
    assert.equal(theirs.from, from.name);
  }
  const [la, lb] = [await shown(A()), await shown(B())];
  assert.deepEqual(la, lb, 'both browsers show the same conversation');
  assertGapless(la, 'alice');
  assert.equal(la.length, lines.length);
  // Own messages are marked as such, the peer's are not.
  assert.equal(await A().page.locator('li.msg.own[data-seq="1"]').count(), 1);
  assert.equal(await B().page.locator('li.msg.own[data-seq="1"]').count(), 0);
  // The URL became a link with the same text, and nothing else did.
  const link = B().page.locator('li.msg[data-seq="4"] .text a');
  assert.equal(await link.count(), 1);
  assert.equal(await link.getAttribute('href'), 'https://example.com/path?q=1');
  await shot(A(), '02-conversation-alice.png');
  await shot(B(), '03-conversation-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

const XSS = [
  `<script>window.__xss=(window.__xss||0)+1;alert("xss-script")</script>`,
  `<img src=x onerror="window.__xss=(window.__xss||0)+1;alert('xss-img')">`,
  `<svg onload="alert('xss-svg')"></svg><a href="javascript:alert('xss-a')">click</a> &lt;b&gt;not bold&lt;/b&gt; &amp;`,
];

let xssFirstSeq = 0; // seq of the first payload message

async function assertInert(s) {
  const seqs = XSS.map((_, i) => xssFirstSeq + i);
  // Wait for the messages by seq, not by text: a UI that parsed them as HTML
  // shows other text, and the checks below then say what went wrong.
  await eventually(`${s.name} to show seqs ${seqs.join(', ')}`, () => shown(s),
    (l) => seqs.every((q) => l.some((m) => m.seq === q)));
  const probe = await s.page.evaluate((seqList) => ({
    xss: window.__xss,
    injected: [...document.querySelectorAll('#messages script, #messages img, #messages svg, #messages iframe, #messages b, #messages a[href^="javascript"]')]
      .map((e) => e.outerHTML),
    texts: seqList.map((q) => {
      const t = document.querySelector(`#messages li.msg[data-seq="${q}"] .text`);
      return { text: t.textContent, childElements: t.childElementCount };
    }),
  }), seqs);
  assert.deepEqual(probe.injected, [], `${s.name}: no element was injected`);
  assert.equal(probe.xss, undefined, `${s.name}: no injected script ran`);
  assert.deepEqual(probe.texts, XSS.map((text) => ({ text, childElements: 0 })),
    `${s.name}: payloads are shown literally, as plain text nodes`);
  const fetchedX = s.requests.filter((u) => /\/x$/.test(u));
  assert.deepEqual(fetchedX, [], `${s.name}: the <img src=x> was never loaded`);
  assertClean(s); // no dialog, no CSP violation (a blocked inline handler would be one)
}

step('markup in a message is shown as text and runs nothing', async () => {
  const before = await shown(A());
  xssFirstSeq = before.length + 1;
  for (const text of XSS) await send(A(), text);
  await assertInert(A());
  await assertInert(B());
  await shot(B(), '04-xss-as-text-bob.png');
});

step('a reload shows the history', async () => {
  const before = await shown(B());
  const sentBefore = B().wsSent.length;
  await B().page.reload({ waitUntil: 'load' });
  await B().page.locator('#chat-view').waitFor({ state: 'visible' });
  await waitConnected(B());
  await eventually('bob room title after reload', () => B().page.textContent('#room-title'), (v) => v === `#${ROOM}`);
  const after = await eventually('bob to show the history after reload', () => shown(B()),
    (l) => l.length === before.length);
  assert.deepEqual(after, before, 'the same messages, same seqs, same order after reload');
  // The reload was a fresh join (a new socket); the history came from the server.
  assert.ok(B().wsSent.slice(sentBefore).some((f) => f.frame.type === 'join' && f.frame.room === ROOM));
  await assertInert(B()); // rendered from history: still inert
  await shot(B(), '05-after-reload-bob.png');
});

step('a node crash shows "reconnecting", then recovers with no lost or doubled message', async () => {
  const downA = `sent by alice while the node was down ${RUN}`;
  const downB = `sent by bob while the node was down ${RUN}`;
  const afterB = `bob after the restart ${RUN}`;
  const afterA = `alice after the restart ${RUN}`;

  outage = true;
  nodeCtl('kill');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} #conn-state "reconnecting"`, () => connState(s),
      (v) => v.state === 'reconnecting' && v.text.startsWith('reconnecting'));
    await eventually(`${s.name} room header to say it is reconnecting`, () => s.page.textContent('#room-meta'),
      (v) => v === 'Reconnecting…');
  }

  // Sends while down are queued with a nonce and shown as pending.
  const nonces = {};
  for (const [s, text] of [[A(), downA], [B(), downB]]) {
    await send(s, text);
    const pending = await eventually(`${s.name} pending copy of ${JSON.stringify(text)}`,
      () => s.page.$$eval('#messages li.msg.pending[data-nonce]', (els) => els.map((e) => ({
        nonce: e.dataset.nonce, text: e.querySelector('.text').textContent,
        status: e.querySelector('.status').textContent,
      }))),
      (l) => l.some((p) => p.text === text));
    const mine = pending.filter((p) => p.text === text);
    assert.equal(mine.length, 1);
    assert.ok(mine[0].nonce.length > 0 && mine[0].nonce.length <= 64);
    assert.equal(mine[0].status, 'Waiting for connection…');
    nonces[s.name] = mine[0].nonce;
  }
  await shot(A(), '06-reconnecting-alice.png');

  const restartedAt = Date.now();
  nodeCtl('start'); // same port, same database file
  for (const s of [A(), B()]) await waitConnected(s, RECOVER_MS);

  for (const [s, text] of [[A(), downA], [B(), downB]]) {
    // Delivered exactly once to both browsers, and the pending copy is gone.
    const mine = await waitShown(s, text);
    const theirs = await waitShown(s === A() ? B() : A(), text);
    assert.equal(mine.seq, theirs.seq);
    await eventually(`${s.name} pending copy to go`,
      () => s.page.locator('#messages li.msg.pending').count(), (n) => n === 0);
    // Every send frame for it carried the nonce it was queued with, and it
    // was (re)sent on the new connection.
    const frames = s.wsSent.filter((f) => f.frame.type === 'send' && f.frame.text === text);
    assert.ok(frames.length >= 1, `${s.name}: the queued message was sent`);
    assert.ok(frames.some((f) => f.at >= restartedAt), `${s.name}: sent after the restart`);
    for (const f of frames) assert.equal(f.frame.nonce, nonces[s.name], `${s.name}: retried with its nonce`);
  }
  outage = false;

  // Messages sent after the restart arrive live on the other side.
  await send(B(), afterB);
  await waitShown(A(), afterB);
  await send(A(), afterA);
  await waitShown(B(), afterA);
  await waitShown(A(), afterA);
  await waitShown(B(), afterB);

  const [la, lb] = [await shown(A()), await shown(B())];
  assert.deepEqual(la, lb, 'both browsers show the same conversation');
  assertGapless(la, 'alice');
  // The server stored each message once, and the UI shows exactly what it stored.
  const stored = await restMessages(A());
  assert.deepEqual(stored.map((m) => ({ seq: m.seq, from: m.from, text: m.text })), la);
  for (const [s, text] of [[A(), downA], [B(), downB]]) {
    const copies = stored.filter((m) => m.text === text);
    assert.equal(copies.length, 1, `${JSON.stringify(text)} stored exactly once`);
    assert.equal(copies[0].nonce, nonces[s.name], 'stored with the nonce it was queued with');
  }
  await shot(A(), '07-recovered-alice.png');
  await shot(B(), '08-recovered-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

step('a send stored just before a crash, whose ack was lost, appears exactly once', async () => {
  // carol's socket runs through the test, which swallows the ack and the echo
  // of one send: the node stores the message, carol never hears of it, then
  // the node crashes. Her client must neither lose it nor show or store it twice.
  const C = await newSession(`carol-${RUN}`, { routeWs: true });
  await C.page.goto(BASE + '/');
  await register(C);
  await joinRoom(C);
  const text = `carol: stored, but the ack was lost ${RUN}`;
  let sendId = null;
  let nonce = null;
  C.drop = (f, dir) => {
    if (dir === 'up' && f.type === 'send' && f.text === text && sendId === null) { sendId = f.id; nonce = f.nonce; return false; }
    if (dir === 'down' && sendId !== null && f.re === sendId) return true;          // the ack
    if (dir === 'down' && f.type === 'message' && nonce && f.nonce === nonce) return true; // the echo
    return false;
  };
  await send(C, text);
  // alice got it live, so it is stored; carol only has her pending copy.
  const live = await waitShown(A(), text);
  await eventually('the ack to carol to be swallowed', () => C.dropped.filter((f) => f.re === sendId).length, (n) => n === 1);
  assert.equal((await shown(C)).filter((m) => m.text === text).length, 0, 'carol has no confirmed copy yet');
  assert.equal(await C.page.locator('#messages li.msg.pending[data-nonce]').count(), 1);
  await shot(C, '09-unacked-carol.png');

  outage = true;
  nodeCtl('kill');
  await eventually('carol #conn-state "reconnecting"', () => connState(C), (v) => v.state === 'reconnecting');
  nodeCtl('start');
  for (const s of [A(), B(), C]) await waitConnected(s, RECOVER_MS);

  const mine = await waitShown(C, text);
  assert.equal(mine.seq, live.seq, 'carol shows it under the seq it was stored with');
  await eventually('carol pending copy to go', () => C.page.locator('#messages li.msg.pending').count(), (n) => n === 0);
  await waitShown(B(), text);
  outage = false;
  // Any resend reused the nonce; the store holds the message once.
  for (const f of C.wsSent.filter((x) => x.frame.type === 'send' && x.frame.text === text)) {
    assert.equal(f.frame.nonce, nonce, 'a resend reuses the nonce');
  }
  const stored = await restMessages(A());
  assert.equal(stored.filter((m) => m.text === text).length, 1, 'stored exactly once');
  const [la, lb, lc] = [await shown(A()), await shown(B()), await shown(C)];
  assertGapless(la, 'alice');
  assert.deepEqual(lb, la);
  assert.deepEqual(lc.filter((m) => m.seq >= live.seq), la.filter((m) => m.seq >= live.seq));
  await shot(C, '10-recovered-carol.png');
  for (const s of [A(), B(), C]) assertClean(s);
});

// Off-canvas panels slide (0.15 s): wait for where they end up before a picture.
const panelBox = (s, sel) => s.page.$eval(sel, (e) => {
  const r = e.getBoundingClientRect();
  return { left: Math.round(r.left), right: Math.round(r.right), width: window.innerWidth };
});

step('narrow (phone) layout', async () => {
  const s = A();
  await s.page.setViewportSize({ width: 390, height: 760 });
  await s.page.locator('#sidebar-toggle').waitFor({ state: 'visible' });
  await eventually('the sidebar to slide out', () => panelBox(s, '#sidebar'), (b) => b.right <= 0);
  await eventually('the members panel to slide out', () => panelBox(s, '#members-panel'), (b) => b.left >= b.width);
  // Nothing sticks out sideways.
  const overflow = await s.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal overflow (${overflow}px)`);
  await shot(s, '11-phone-alice.png');
  await s.page.click('#sidebar-toggle');
  await eventually('sidebar to open', () => s.page.getAttribute('#sidebar-toggle', 'aria-expanded'), (v) => v === 'true');
  await eventually('the sidebar to slide in', () => panelBox(s, '#sidebar'), (b) => b.left === 0);
  await shot(s, '12-phone-sidebar-alice.png');
  await s.page.keyboard.press('Escape');
  await eventually('sidebar to close', () => s.page.getAttribute('#sidebar-toggle', 'aria-expanded'), (v) => v === 'false');
  await eventually('the sidebar to slide out', () => panelBox(s, '#sidebar'), (b) => b.right <= 0);
  assertClean(s);
});

step('dark colour scheme', async () => {
  const s = B();
  await s.page.emulateMedia({ colorScheme: 'dark' });
  await eventually('dark background', () => s.page.evaluate(() => getComputedStyle(document.body).backgroundColor),
    (v) => v === 'rgb(20, 22, 26)');
  await shot(s, '13-dark-bob.png');
  assertClean(s);
});

// Another device of alice's (a raw WebSocket opened in her page, as a second
// client would) sends protocol 1.1 requests; returns the answers' types.
async function otherDevice(s, requests) {
  return s.page.evaluate(async ({ port, requests }) => {
    const token = sessionStorage.getItem('parley.token');
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('ws failed')); });
    let next = 1;
    const ask = (frame) => new Promise((ok) => {
      const id = next++;
      const onMessage = (ev) => {
        const reply = JSON.parse(ev.data);
        if (reply.re === id) { ws.removeEventListener('message', onMessage); ok(reply); }
      };
      ws.addEventListener('message', onMessage);
      ws.send(JSON.stringify({ ...frame, id }));
    });
    const answers = [];
    for (const frame of [{ type: 'hello', token }, ...requests]) answers.push((await ask(frame)).type);
    ws.close();
    return answers;
  }, { port: PORT, requests });
}

const liOf = (s, seq) => s.page.evaluate((q) => {
  const li = document.querySelector(`#messages li.msg[data-seq="${q}"]`);
  if (!li) return null;
  const part = (sel) => { const e = li.querySelector(sel); return e ? e.textContent : null; };
  return { text: part('.text'), edited: part('.edited'), reactions: part('.reactions'), quote: part('.reply-quote') };
}, seq);

// Last: the room's log gets edit/reaction/delete events, whose seqs are not
// shown as lines (the steps above count lines as 1..n).
step('edits, reactions, replies and deletes made elsewhere show in place, live and after a reload', async () => {
  const text = `to be edited ${RUN}`;
  await send(A(), text);
  const target = (await waitShown(B(), text)).seq;
  const answers = await otherDevice(A(), [
    { type: 'join', room: ROOM },
    { type: 'edit', room: ROOM, target, text: `edited ${RUN}` },
    { type: 'react', room: ROOM, target, emoji: '👍', on: true },
    { type: 'send', room: ROOM, text: `a reply ${RUN}`, reply_to: target },
  ]);
  assert.deepEqual(answers, ['welcome', 'joined', 'ack', 'ack', 'ack']);
  const reply = await waitShown(B(), `a reply ${RUN}`);
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show the edit and the reaction in place`, () => liOf(s, target),
      (v) => v && v.text === `edited ${RUN}` && v.edited === '(edited)' && v.reactions === '👍 1');
    await eventually(`${s.name} to quote the edited text in the reply`, () => liOf(s, reply.seq),
      (v) => v && v.quote === `↪ ${A().name}: edited ${RUN}`);
  }
  await shot(B(), '14-edit-reaction-reply-bob.png');
  assert.deepEqual(await otherDevice(A(), [{ type: 'delete', room: ROOM, target }]), ['welcome', 'ack']);
  await eventually('bob to show the placeholder', () => liOf(B(), target),
    (v) => v && v.text === 'message deleted' && v.reactions === null && v.edited === null);
  // From history, after a reload: the same state.
  await B().page.reload({ waitUntil: 'load' });
  await waitConnected(B());
  await eventually('bob to show the deleted message and the reply after reload', async () => [
    await liOf(B(), target), await liOf(B(), reply.seq)],
  ([t, r]) => t && t.text === 'message deleted' && r && r.quote === `↪ ${A().name}: message deleted`);
  await shot(B(), '15-deleted-after-reload-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});
