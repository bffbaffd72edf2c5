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
    wsUrls: [], drop: null, dropped: [], wsRoute: null,
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
      s.wsRoute = { page: ws, server };
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

// ---- rooms with members, roles and moderation (protocol 1.1 §3) -----------------

// A page's own origin: where its REST calls go.
const originOf = (s) => new URL(s.page.url()).origin;

// A REST call with the session's token, from the test (not the page: a
// refused request would be logged in the page's console). { status, body }.
export async function restAs(s, method, path, body) {
  const headers = { Authorization: `Bearer ${await tokenOf(s)}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(originOf(s) + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: resp.status, body: await resp.json().catch(() => null) };
}

// Chromium logs a refused fetch ("Failed to load resource: … status of
// 409") as a console error. A step that makes the UI ask for something the
// server must refuse takes back exactly those, then checks the rest.
export function forgiveRefusals(s, ...statuses) {
  const re = new RegExp(`^Failed to load resource: the server responded with a status of (${statuses.join('|')})\\b`);
  s.consoleErrors = s.consoleErrors.filter((e) => !re.test(e));
}

// Ends a routed session's WebSocket as a node drain would (1001): the page
// reconnects at once and joins its rooms again.
export async function dropSocket(s) {
  assert.ok(s.wsRoute, `${s.name}: only a session opened with routeWs can drop its socket`);
  const { page, server } = s.wsRoute;
  await server.close({ code: 1001, reason: 'test: node is draining' }).catch(() => {});
  await page.close({ code: 1001, reason: 'node is draining; reconnect and resume' }).catch(() => {});
}

// The sidebar: "my rooms", and the rooms offered under "Browse rooms".
export const myRooms = (s) => s.page.$$eval('#room-list .nav-btn', (els) => els.map((e) => e.dataset.room));
export const browseRooms = (s) => s.page.$$eval('#browse-list .nav-btn', (els) => els.map((e) => e.dataset.room));

// The member list as shown: user -> role ('' while the roles are not loaded).
export const memberRoles = (s) => s.page.$$eval('#members li.member',
  (els) => Object.fromEntries(els.map((e) => [e.dataset.user, e.dataset.role])));

// Member and topic lines of the timeline, in order.
export const eventLines = (s) => s.page.$$eval('#messages li.room-event', (els) => els.map((e) => e.querySelector('.event-text').textContent));

export const toasts = (s) => s.page.locator('#toasts .toast-text').allTextContents();

export async function waitMembers(s, expected, timeout = WAIT_MS) {
  const want = JSON.stringify(Object.entries(expected).sort());
  await eventually(`${s.name} member list ${want}`, () => memberRoles(s),
    (v) => JSON.stringify(Object.entries(v).sort()) === want, timeout);
}

export async function waitEventLine(s, text, timeout = WAIT_MS) {
  const lines = await eventually(`${s.name} to show the line ${JSON.stringify(text)}`, () => eventLines(s),
    (l) => l.includes(text), timeout);
  assert.equal(lines.filter((l) => l === text).length, 1, `${s.name} shows ${JSON.stringify(text)} once`);
}

// A notice saying `text` (some add the server's own words after it).
export async function waitToast(s, text, timeout = WAIT_MS) {
  await eventually(`${s.name} to be told ${JSON.stringify(text)}`, () => toasts(s),
    (l) => l.some((t) => t === text || t.startsWith(`${text} `)), timeout);
}

export async function waitInMyRooms(s, room, present = true, timeout = WAIT_MS) {
  await eventually(`${s.name}: #${room} ${present ? 'in' : 'not in'} "my rooms"`, () => myRooms(s),
    (l) => l.includes(room) === present, timeout);
}

// The header of the open room: title, topic, the private flag, which of the
// owner/moderator controls show.
export const header = (s) => s.page.evaluate(() => {
  const shown = (id) => !document.getElementById(id).hidden;
  return {
    title: document.getElementById('room-title').textContent,
    topic: document.getElementById('room-topic').textContent,
    private: shown('room-private'),
    editTopic: shown('topic-edit-btn'),
    modTools: shown('mod-tools'),
    part: shown('part-btn'),
  };
});

// Creates a room from the "New room" form; the creator is in it as owner.
export async function createRoom(s, room, { topic = '', isPrivate = false } = {}) {
  await s.page.click('#create-room summary');
  await s.page.fill('#create-name', room);
  await s.page.fill('#create-topic', topic);
  await s.page.setChecked('#create-private', isPrivate);
  await s.page.click('#create-btn');
  await eventually(`${s.name} to open #${room}`, () => header(s),
    (h) => h.title === `#${room}` && h.topic === topic && h.private === isPrivate);
  await eventually(`${s.name} joined`, () => s.page.textContent('#room-meta'), (v) => /^\d+ online$/.test(v));
}

// Clicks an action of the member panel, by its accessible name ("Kick bob").
export async function memberAction(s, name) {
  await s.page.locator('#members-panel').getByRole('button', { name, exact: true }).click();
}

export async function invite(s, user) {
  await s.page.fill('#invite-input', user);
  await s.page.click('#invite-btn');
  await eventually(`${s.name}: the invite field to clear`, () => s.page.inputValue('#invite-input'), (v) => v === '');
}

export async function setTopic(s, topic) {
  await s.page.click('#topic-edit-btn');
  await s.page.fill('#topic-input', topic);
  await s.page.press('#topic-input', 'Enter');
  await eventually(`${s.name}: the topic editor to close`, () => s.page.locator('#topic-form').isHidden());
}

// "Leave room", then the confirmation.
export async function partRoom(s) {
  await s.page.click('#part-btn');
  await s.page.click('#part-confirm-btn');
}

// Waits until a room was taken from a user's page: nothing of it shown,
// not in "my rooms" nor offered to browse (a private room), and told why.
export async function waitRemoved(s, room, told) {
  await waitToast(s, told);
  await eventually(`${s.name}: #${room} closed and cleared`, () => s.page.evaluate(() => ({
    title: document.getElementById('room-title').textContent,
    lines: document.querySelectorAll('#messages li').length,
    empty: document.getElementById('empty-state').textContent,
  })), (v) => v.title === 'No conversation open' && v.lines === 0 && v.empty === told);
  await waitInMyRooms(s, room, false);
  assert.equal((await browseRooms(s)).includes(room), false, `${s.name}: the private #${room} is not offered`);
  const saved = await s.page.evaluate(() => JSON.parse(sessionStorage.getItem('parley.rooms') || '[]'));
  assert.equal(saved.includes(room), false, `${s.name}: #${room} is not among the rooms joined again on a reload`);
}

// The steps of the "done when" scenario of rooms with members, shared by
// the single-node and the fleet suites. `c` says who plays what (session
// getters) and where: c.setup() opens the sessions the suite still lacks;
// c.pub is a public room everybody sees; c.room the private room to make;
// c.shot(name) the screenshot file name; c.secondDevice() a new browser
// context for the owner (logged out), on another node in the fleet.
export function membershipSteps(step, c) {
  const { room } = c;
  const [T1, T2] = [`plans for ${room}`, `new plans, set by the moderator of ${room}`];
  const all = () => [c.owner(), c.mod(), c.victim(), c.banned(), c.outsider()];
  const names = () => Object.fromEntries(['owner', 'mod', 'victim', 'banned', 'outsider'].map((k) => [k, c[k]().name]));

  step('an owner creates a private room with a topic; an outsider does not see it', async () => {
    await c.setup();
    const n = names();
    const O = c.owner();
    await createRoom(O, room, { topic: T1, isPrivate: true });
    assert.deepEqual(await header(O), { title: `#${room}`, topic: T1, private: true, editTopic: true, modTools: true, part: true });
    await waitMembers(O, { [n.owner]: 'owner' });
    await waitInMyRooms(O, room);

    // The outsider's next room list (the page asks every 10 s) does not have
    // it; the UI offers the public room from that list, and not this one.
    const E = c.outsider();
    const resp = await E.page.waitForResponse((r) => r.url().endsWith('/api/rooms') && r.request().method() === 'GET', { timeout: RECOVER_MS });
    const listed = (await resp.json()).map((r) => r.room);
    assert.ok(listed.includes(c.pub) && !listed.includes(room), `the outsider's list: ${listed.join(', ')}`);
    await eventually('the outsider to offer the public room', () => browseRooms(E), (l) => l.includes(c.pub));
    assert.equal((await browseRooms(E)).includes(room), false, 'not offered to browse');
    assert.equal((await myRooms(E)).includes(room), false, 'not in the outsider\'s rooms');
    // Asking for it by name is refused, and said so.
    await E.page.fill('#room-input', room);
    await E.page.click('#room-join-btn');
    await waitToast(E, `Cannot open #${room}: You are not allowed to do that.`);
    await eventually('the outsider to show nothing of it', () => E.page.textContent('#room-title'), (v) => v === 'No conversation open');
    assert.equal((await restAs(E, 'GET', `/api/rooms/${room}/members`)).status, 403);
    await shot(O, c.shot('private-room-created-owner'));
    for (const s of [O, E]) assertClean(s);
  });

  step('the owner invites three users: the room shows up in their lists, its history tells who added whom', async () => {
    const n = names();
    const [O, M, V, X] = [c.owner(), c.mod(), c.victim(), c.banned()];
    for (const s of [M, V, X]) {
      await invite(O, s.name);
      await waitEventLine(O, `${n.owner} added ${s.name}`);
    }
    await waitMembers(O, { [n.owner]: 'owner', [n.mod]: 'member', [n.victim]: 'member', [n.banned]: 'member' });
    // Their pages learn it from the room list (asked every 10 s).
    await Promise.all([M, V, X].map((s) => waitInMyRooms(s, room, true, RECOVER_MS)));
    for (const s of [M, V, X]) {
      await openFromList(s, room);
      await eventually(`${s.name} to show the room as a member`, () => header(s),
        (h) => h.topic === T1 && h.private && !h.editTopic && !h.modTools && h.part);
      for (const t of [M, V, X]) await waitEventLine(s, `${n.owner} added ${t.name}`);
      await waitMembers(s, { [n.owner]: 'owner', [n.mod]: 'member', [n.victim]: 'member', [n.banned]: 'member' });
      assert.equal(await s.page.locator('#members-panel .member-action').count(), 0, `${s.name}: a member has no actions`);
    }
    const hi = `hello from ${n.victim} in ${room}`;
    await send(V, hi);
    for (const s of [O, M, X]) await waitShown(s, hi);
    await shot(M, c.shot('invited-member'));
    for (const s of all()) assertClean(s);
  });

  step('the owner makes one of them moderator, who sets the topic: everyone sees both live', async () => {
    const n = names();
    const [O, M, V, X] = [c.owner(), c.mod(), c.victim(), c.banned()];
    await memberAction(O, `Make moderator: ${n.mod}`);
    for (const s of [O, M, V, X]) {
      await waitEventLine(s, `${n.mod} is now moderator`);
      await waitMembers(s, { [n.owner]: 'owner', [n.mod]: 'moderator', [n.victim]: 'member', [n.banned]: 'member' });
    }
    // The new moderator's page gains the tools live: for members, never
    // against the owner; no roles to give.
    await eventually('the moderator to get the tools', () => header(M), (h) => h.editTopic && h.modTools);
    const actions = await M.page.locator('#members .member-action').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')));
    assert.deepEqual(actions.sort(), [`Ban ${n.banned}`, `Ban ${n.victim}`, `Kick ${n.banned}`, `Kick ${n.victim}`].sort());
    assert.equal((await header(V)).modTools, false);

    await setTopic(M, T2);
    for (const s of [O, M, V, X]) {
      await waitEventLine(s, `${n.mod} set the topic to “${T2}”`);
      await eventually(`${s.name} header topic`, () => header(s), (h) => h.topic === T2);
    }
    await shot(O, c.shot('moderator-and-topic-owner'));
    for (const s of all()) assertClean(s);
  });

  step('the moderator kicks a member: her page drops the room and does not rejoin it; the others see it live', async () => {
    const n = names();
    const [O, M, V, X] = [c.owner(), c.mod(), c.victim(), c.banned()];
    await memberAction(M, `Kick ${n.victim}`);
    for (const s of [O, M, X]) {
      await waitEventLine(s, `${n.victim} was kicked by ${n.mod}`);
      await waitMembers(s, { [n.owner]: 'owner', [n.mod]: 'moderator', [n.banned]: 'member' });
    }
    await waitRemoved(V, room, `You were removed from #${room} by ${n.mod}.`);
    assert.ok(V.wsReceived.some((f) => f.frame.type === 'left' && f.frame.room === room && f.frame.reason === 'kicked'));
    await shot(V, c.shot('kicked-victim'));
    // A reconnect joins her rooms again, but not this one.
    const since = V.wsSent.length;
    await dropSocket(V);
    await eventually(`${V.name} to reconnect`, () => V.wsSent.slice(since).some((f) => f.frame.type === 'hello'));
    await waitConnected(V, RECOVER_MS);
    await eventually(`${V.name} to join again what she had open`, () => V.wsSent.slice(since).some((f) => f.frame.type === 'join'));
    assert.equal(V.wsSent.slice(since).filter((f) => f.frame.room === room).length, 0, 'nothing sent for the room she was kicked from');
    assert.equal((await myRooms(V)).includes(room), false);
    for (const s of all()) assertClean(s);
  });

  step('the moderator bans a member with a reason: he is told why, cannot come back, until unbanned', async () => {
    const n = names();
    const [O, M, X] = [c.owner(), c.mod(), c.banned()];
    await memberAction(M, `Ban ${n.banned}`);
    assert.equal(await M.page.inputValue('#ban-user'), n.banned);
    assert.equal(await M.page.evaluate(() => document.activeElement.id), 'ban-reason');
    await M.page.fill('#ban-reason', 'spam');
    await M.page.click('#ban-btn');
    for (const s of [O, M]) {
      await waitEventLine(s, `${n.banned} was banned by ${n.mod}: spam`);
      await waitMembers(s, { [n.owner]: 'owner', [n.mod]: 'moderator' });
      await eventually(`${s.name} to list the ban`, () => s.page.$$eval('#bans li.ban', (els) => els.map((e) => e.textContent)),
        (l) => l.length === 1 && l[0].startsWith(`${n.banned} by ${n.mod}: spam`));
    }
    await waitRemoved(X, room, `You were banned from #${room} by ${n.mod}: spam.`);
    await shot(M, c.shot('banned-moderator'));
    // He cannot open it again, and the owner cannot add him back while banned.
    await X.page.fill('#room-input', room);
    await X.page.click('#room-join-btn');
    await waitToast(X, `Cannot open #${room}: You are not allowed to do that.`);
    await O.page.fill('#invite-input', n.banned);
    await O.page.click('#invite-btn');
    await eventually('the owner to be told', () => O.page.textContent('#members-error'),
      (v) => v.startsWith(`Could not add ${n.banned}: `) && v.includes('banned'));
    forgiveRefusals(O, 409);
    // Unbanned: the line, and the list empties on both.
    await memberAction(M, `Unban ${n.banned}`);
    for (const s of [O, M]) {
      await waitEventLine(s, `${n.banned} was unbanned by ${n.mod}`);
      await eventually(`${s.name}: no ban left`, () => s.page.locator('#bans li.ban').count(), (k) => k === 0);
    }
    for (const s of all()) assertClean(s);
  });

  step('"Leave room": the last owner is refused and told why; the moderator parts', async () => {
    const n = names();
    const [O, M] = [c.owner(), c.mod()];
    await partRoom(O);
    await eventually('the owner to be told', () => toasts(O),
      (l) => l.some((t) => t.startsWith(`Could not leave #${room}: `) && t.includes('last owner')));
    assert.equal((await header(O)).title, `#${room}`, 'the owner is still in the room');
    await partRoom(M);
    await waitRemoved(M, room, `You left #${room}.`);
    await waitEventLine(O, `${n.mod} left`);
    await waitMembers(O, { [n.owner]: 'owner' });
    for (const s of all()) assertClean(s);
  });

  step('"my rooms" come back on login in another browser', async () => {
    const n = names();
    const O2 = await c.secondDevice();
    await login(O2, n.owner);
    await waitInMyRooms(O2, room);
    await waitInMyRooms(O2, c.pub);
    assert.equal(framesSent(O2, 'join').length, 0, 'listed without joining anything');
    await openFromList(O2, room);
    await eventually('the second browser to show the room', () => header(O2),
      (h) => h.topic === T2 && h.private && h.editTopic && h.modTools);
    await waitMembers(O2, { [n.owner]: 'owner' });
    await waitEventLine(O2, `${n.mod} left`);
    await shot(O2, c.shot('my-rooms-second-browser'));
    assertClean(O2);
  });
}
