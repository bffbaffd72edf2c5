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
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  state, sessions, eventually, sleep, WAIT_MS, RECOVER_MS, PASSWORD, launchBrowser, closeBrowser,
  newSession, newTab, assertClean, shot, connState, waitConnected, shown, countText, waitShown, send,
  assertGapless, step, register, login, joinRoom as joinRoomIn, liOf, msgLi, framesSent, focused,
  rowAction, tokenOf, badge, openFromList, membershipSteps, createRoom, invite, setTopic, header,
  waitMembers, memberRoles, waitEventLine, waitInMyRooms, restAs,
} from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_SH = path.join(HERE, 'node.sh');
const PORT = process.env.E2E_PORT;
const BASE = `http://127.0.0.1:${PORT}`;

const RUN = Math.random().toString(36).slice(2, 8);
const ROOM = `e2e-${RUN}`;

// ---- helpers (the shared ones are in helpers.mjs) -------------------------------

function nodeCtl(cmd) {
  execFileSync('bash', [NODE_SH, cmd], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 30000 });
}

async function restMessages(s) {
  const token = await s.page.evaluate(() => sessionStorage.getItem('parley.token'));
  const resp = await fetch(`${BASE}/api/rooms/${ROOM}/messages?limit=200`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(resp.status, 200, 'GET messages');
  const body = await resp.json();
  return body.messages;
}

const joinRoom = (s, room = ROOM) => joinRoomIn(s, room);

// ---- setup ----------------------------------------------------------------------

before(async () => {
  assert.ok(PORT, 'E2E_PORT is not set: run tests/web/run.sh, which starts the node');
  await launchBrowser();
  await newSession(`alice-${RUN}`);
  await newSession(`bob-${RUN}`);
});

after(async () => {
  await closeBrowser();
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

  state.outage = true;
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
  state.outage = false;

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

  state.outage = true;
  nodeCtl('kill');
  await eventually('carol #conn-state "reconnecting"', () => connState(C), (v) => v.state === 'reconnecting');
  nodeCtl('start');
  for (const s of [A(), B(), C]) await waitConnected(s, RECOVER_MS);

  const mine = await waitShown(C, text);
  assert.equal(mine.seq, live.seq, 'carol shows it under the seq it was stored with');
  await eventually('carol pending copy to go', () => C.page.locator('#messages li.msg.pending').count(), (n) => n === 0);
  await waitShown(B(), text);
  state.outage = false;
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

// From here on the room's log gets edit/reaction/delete events, whose seqs
// are not shown as lines (the steps above count lines as 1..n).
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
  await eventually('alice to quote the deleted message in the reply', () => liOf(A(), reply.seq),
    (v) => v && v.quote === `↪ ${A().name}: message deleted`);
  // From history, after a reload: the same state.
  await B().page.reload({ waitUntil: 'load' });
  await waitConnected(B());
  await eventually('bob to show the deleted message and the reply after reload', async () => [
    await liOf(B(), target), await liOf(B(), reply.seq)],
  ([t, r]) => t && t.text === 'message deleted' && r && r.quote === `↪ ${A().name}: message deleted`);
  await shot(B(), '15-deleted-after-reload-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

// ---- the user's own actions (protocol 1.1 in the UI) ---------------------------------
// These steps add events (edits, reactions, deletes) and messages by REST:
// they look messages up by text and seq, never by line number.

// `n` messages posted by REST as a user of their own (so nobody's send
// budget in the UI is spent), retrying when rate limited.
async function postMany(n, textOf) {
  const reg = await fetch(`${BASE}/api/auth/register`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: `filler-${RUN}`, password: PASSWORD }),
  });
  assert.equal(reg.status, 201, 'register the filler user');
  const { token } = await reg.json();
  for (let i = 0; i < n; i++) {
    for (;;) {
      const resp = await fetch(`${BASE}/api/rooms/${ROOM}/messages`, {
        method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ text: textOf(i) }),
      });
      if (resp.status === 201) break;
      assert.equal(resp.status, 429, `POST message ${i}`);
      await sleep(250);
    }
  }
}

step('you edit and delete your own messages, by mouse and by keyboard; others see it live', async () => {
  await A().page.setViewportSize({ width: 1280, height: 800 }); // the phone step narrowed it
  const text = `mine to change ${RUN}`;
  await send(A(), text);
  const seq = (await waitShown(B(), text)).seq;
  // Others get no Edit or Delete on it.
  await msgLi(B(), seq).hover();
  assert.deepEqual(await msgLi(B(), seq).locator('.msg-actions button').allTextContents(), ['React', 'Reply']);

  // Mouse: the actions show on hover; Edit opens an inline editor, Enter saves.
  await rowAction(A(), seq, 'Edit your message');
  const editor = msgLi(A(), seq).locator('textarea.editor-input');
  assert.equal(await editor.inputValue(), text);
  await editor.fill(`changed ${RUN}`);
  await editor.press('Enter');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show the edit`, () => liOf(s, seq),
      (v) => v && v.text === `changed ${RUN}` && v.edited === '(edited)');
  }
  // Escape cancels an edit: nothing is sent.
  const editsBefore = framesSent(A(), 'edit').length;
  await rowAction(A(), seq, 'Edit your message');
  await editor.fill('never sent');
  await editor.press('Escape');
  await eventually('the editor to close', () => editor.count(), (n) => n === 0);
  assert.equal(framesSent(A(), 'edit').length, editsBefore, 'a cancelled edit sends nothing');
  assert.equal((await liOf(A(), seq)).text, `changed ${RUN}`);

  // Keyboard only: the row takes focus, Tab walks its actions, Enter edits,
  // Enter saves and focus goes back to the row.
  await A().page.mouse.move(0, 0);
  await msgLi(A(), seq).focus();
  const walked = [];
  for (let i = 0; i < 3; i++) {
    await A().page.keyboard.press('Tab');
    walked.push(await focused(A()));
  }
  assert.deepEqual(walked, [`Add a reaction to ${A().name}'s message`, `Reply to ${A().name}`, 'Edit your message']);
  await A().page.keyboard.press('Enter');
  assert.equal(await focused(A()), 'Message text: Enter saves, Escape cancels');
  await A().page.keyboard.press('ControlOrMeta+A');
  await A().page.keyboard.type(`typed at the keyboard ${RUN}`);
  await A().page.keyboard.press('Enter');
  assert.equal(await focused(A()), `row ${seq}`);
  await eventually('bob to show the keyboard edit', () => liOf(B(), seq), (v) => v && v.text === `typed at the keyboard ${RUN}`);

  // Delete asks first, then everyone sees the placeholder.
  await rowAction(A(), seq, 'Delete your message');
  await msgLi(A(), seq).getByRole('button', { name: 'Yes, delete the message' }).click();
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show the deleted placeholder`, () => liOf(s, seq), (v) => v && v.text === 'message deleted');
  }
  assert.equal(await msgLi(A(), seq).locator('.msg-actions').count(), 0, 'a deleted message has no actions');
  // Every request went with a nonce of its own.
  const mine = [...framesSent(A(), 'edit'), ...framesSent(A(), 'delete')].filter((f) => f.target === seq);
  assert.deepEqual(mine.map((f) => f.type), ['edit', 'edit', 'delete']);
  assert.equal(new Set(mine.map((f) => f.nonce)).size, 3, 'a fresh nonce each');
  assert.ok(mine.every((f) => typeof f.nonce === 'string' && f.nonce.length > 0 && f.nonce.length <= 64));
  await shot(A(), '16-edited-deleted-alice.png');

  // A refusal is shown: carol's page never hears that her message was
  // deleted elsewhere (the test swallows the push), so her edit gets not_found.
  const C = sessions[`carol-${RUN}`];
  const ctext = `carol, deleted behind her back ${RUN}`;
  await send(C, ctext);
  const cseq = (await waitShown(C, ctext)).seq;
  C.drop = (f, dir) => dir === 'down' && f.type === 'deleted' && f.target === cseq;
  assert.deepEqual(await otherDevice(C, [{ type: 'join', room: ROOM }, { type: 'delete', room: ROOM, target: cseq }]),
    ['welcome', 'joined', 'ack']);
  await eventually('the push to be swallowed', () => C.dropped.length, (n) => n >= 1);
  await rowAction(C, cseq, 'Edit your message');
  await msgLi(C, cseq).locator('textarea.editor-input').fill('too late');
  await msgLi(C, cseq).locator('textarea.editor-input').press('Enter');
  await eventually('carol to be told', () => C.page.locator('#toasts .toast-text').allTextContents(),
    (l) => l.some((t) => t.startsWith('Could not edit the message: Not found.')));
  C.drop = null;
  for (const s of [A(), B(), C]) assertClean(s);
});

step('an edit whose answer a node crash took goes again after the reconnect, stored once', async () => {
  // carol's edit reaches the node, which stores it; the test swallows its
  // ack (and the push), then the node crashes. Her page cannot know whether
  // it was stored: it sends it again, with the same nonce, once reconnected.
  const C = sessions[`carol-${RUN}`];
  const text = `carol: to be edited through a crash ${RUN}`;
  await send(C, text);
  const seq = (await waitShown(A(), text)).seq;
  const changed = `carol: edited through a crash ${RUN}`;
  let editId = null;
  C.drop = (f, dir) => {
    if (dir === 'up' && f.type === 'edit' && f.target === seq && editId === null) { editId = f.id; return false; }
    if (dir === 'down' && editId !== null && f.re === editId) return true;       // the ack
    if (dir === 'down' && f.type === 'edited' && f.target === seq) return true; // the push
    return false;
  };
  await rowAction(C, seq, 'Edit your message');
  const editor = msgLi(C, seq).locator('textarea.editor-input');
  await editor.fill(changed);
  await editor.press('Enter');
  await eventually('alice to show the edit', () => liOf(A(), seq), (v) => v && v.text === changed);
  await eventually('the ack to carol to be swallowed', () => C.dropped.filter((f) => f.re === editId).length, (n) => n === 1);
  C.drop = null;

  state.outage = true;
  nodeCtl('kill');
  await eventually('carol #conn-state "reconnecting"', () => connState(C), (v) => v.state === 'reconnecting');
  nodeCtl('start');
  for (const s of [A(), B(), C]) await waitConnected(s, RECOVER_MS);
  state.outage = false;

  await eventually('carol to send the edit again', () => framesSent(C, 'edit').filter((f) => f.target === seq).length, (n) => n === 2);
  const edits = framesSent(C, 'edit').filter((f) => f.target === seq);
  assert.equal(edits[0].nonce, edits[1].nonce, 'again with the same nonce');
  await eventually('carol to show the edit', () => liOf(C, seq), (v) => v && v.text === changed);
  const stored = await restMessages(A());
  assert.equal(stored.filter((e) => e.type === 'edited' && e.target === seq).length, 1, 'stored once');
  for (const s of [A(), B(), C]) assertClean(s);
});

step('reactions: pick one, see counts and who, toggle your own off and on', async () => {
  const text = `react to me ${RUN}`;
  await send(A(), text);
  const seq = (await waitShown(B(), text)).seq;
  const chip = (s) => s.page.evaluate((q) => {
    const c = document.querySelector(`#messages li.msg[data-seq="${q}"] button.reaction`);
    return c && { text: c.textContent, title: c.title, pressed: c.getAttribute('aria-pressed') };
  }, seq);

  await rowAction(B(), seq, `Add a reaction to ${A().name}'s message`);
  const picker = msgLi(B(), seq).locator('.reaction-picker');
  assert.deepEqual(await picker.locator('button').allTextContents(), ['👍', '❤️', '😂', '🎉', '😮', '😢', '✕']);
  await picker.getByRole('button', { name: 'React with 🎉' }).click();
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show bob's reaction`, () => chip(s),
      (v) => v && v.text === '🎉 1' && v.title === B().name && v.pressed === String(s === B()));
  }
  // Clicking a chip adds yours...
  await msgLi(A(), seq).locator('button.reaction').click();
  const both = [A().name, B().name].sort().join(', ');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show two`, () => chip(s), (v) => v && v.text === '🎉 2' && v.title === both && v.pressed === 'true');
  }
  // ...or takes it back.
  await msgLi(B(), seq).locator('button.reaction').click();
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show alice's only`, () => chip(s),
      (v) => v && v.text === '🎉 1' && v.title === A().name && v.pressed === String(s === A()));
  }
  assert.deepEqual(framesSent(B(), 'react').filter((f) => f.target === seq).map((f) => [f.emoji, f.on]),
    [['🎉', true], ['🎉', false]]);

  // Keyboard: Enter on React opens the picker on its first emoji; Escape
  // closes it and gives focus back to the row; nothing was sent.
  const reactsBefore = framesSent(B(), 'react').length;
  await B().page.mouse.move(0, 0);
  await msgLi(B(), seq).focus();
  await B().page.keyboard.press('Tab'); // the chip
  await B().page.keyboard.press('Tab'); // React
  assert.equal(await focused(B()), `Add a reaction to ${A().name}'s message`);
  await B().page.keyboard.press('Enter');
  assert.equal(await focused(B()), 'React with 👍');
  await B().page.keyboard.press('Escape');
  assert.equal(await focused(B()), `row ${seq}`);
  assert.equal(await picker.count(), 0);
  assert.equal(framesSent(B(), 'react').length, reactsBefore);
  await shot(B(), '17-reactions-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

let originalSeq = 0; // a message beyond the first history page (the search step finds it)

step('reply: a bar above the composer, reply_to on the wire, the quote jumps to the original', async () => {
  const original = `the original zebra${RUN}`;
  await send(A(), original);
  originalSeq = (await waitShown(B(), original)).seq;

  // The bar says what is answered; Escape in the composer cancels it.
  await rowAction(B(), originalSeq, `Reply to ${A().name}`);
  assert.equal(await B().page.textContent('#reply-text'), `Replying to ${A().name}: ${original}`);
  assert.equal(await B().page.evaluate(() => document.activeElement.id), 'composer-input');
  await B().page.keyboard.press('Escape');
  assert.equal(await B().page.locator('#reply-bar').isHidden(), true);

  // Enough messages after it that a fresh join's first page leaves it out.
  await postMany(55, (i) => `filler ${i} filler${RUN}`);
  await waitShown(B(), `filler 54 filler${RUN}`);

  await rowAction(B(), originalSeq, `Reply to ${A().name}`);
  const answer = `my answer ${RUN}`;
  await send(B(), answer);
  assert.equal(await B().page.locator('#reply-bar').isHidden(), true, 'sending ends the reply');
  const reply = await waitShown(A(), answer);
  const frame = framesSent(B(), 'send').find((f) => f.text === answer);
  assert.equal(frame.reply_to, originalSeq, 'the send carries reply_to');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to quote the original`, () => liOf(s, reply.seq), (v) => v && v.quote === `↪ ${A().name}: ${original}`);
  }

  // After a reload only the last page is loaded: the quote pages back to
  // the original, scrolls to it and highlights it.
  await B().page.reload({ waitUntil: 'load' });
  await waitConnected(B());
  await waitShown(B(), answer);
  assert.equal(await msgLi(B(), originalSeq).count(), 0, 'the original is not loaded yet');
  await msgLi(B(), reply.seq).locator('.reply-quote').click();
  await eventually('bob to show the original, highlighted and in view', () => B().page.evaluate((q) => {
    const li = document.querySelector(`#messages li.msg[data-seq="${q}"]`);
    if (!li) return null;
    const r = li.getBoundingClientRect();
    const v = document.getElementById('scroller').getBoundingClientRect();
    return { highlighted: li.classList.contains('highlight'), inView: r.top >= v.top && r.bottom <= v.bottom };
  }, originalSeq), (v) => v && v.highlighted && v.inView);
  assert.equal((await liOf(B(), reply.seq)).quote, `↪ ${A().name}: ${original}`, 'the quote shows the original once loaded');
  await shot(B(), '18-jump-to-original-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

step('unread badges and mentions, the "new messages" divider, read state shared by devices', async () => {
  const side = `side-${RUN}`;
  await joinRoom(A(), side);
  await send(A(), `first in the side room ${RUN}`);
  await joinRoom(B(), side);
  await waitShown(B(), `first in the side room ${RUN}`);
  await eventually('bob to mark it read', () => framesSent(B(), 'read').filter((f) => f.room === side).length, (n) => n >= 1);
  await openFromList(B(), ROOM); // the side room stays joined, out of sight
  // Bob left the main room scrolled up at the original of a reply (the step
  // before): what came after it is read now that the room opens at its end.
  await eventually('bob to read the main room', () => badge(B(), ROOM), (v) => v && v.unread === '');

  // Live: two messages for bob, one mentioning him.
  const hello = `hello bob ${RUN}`;
  const ping = `ping @${B().name}, look ${RUN}`;
  await send(A(), hello);
  await send(A(), ping);
  await eventually('bob badge: 2 unread, 1 mention', () => badge(B(), side), (v) => v && v.unread === '2' && v.mentions === '@1');
  assert.equal(await B().page.title(), '(2) Parley');
  // An edit that adds a mention to an unread message counts it, one that
  // takes it out uncounts it: mentions are of the current text.
  const helloSeq = (await waitShown(A(), hello)).seq;
  const editTo = async (text) => {
    await rowAction(A(), helloSeq, 'Edit your message');
    await msgLi(A(), helloSeq).locator('textarea.editor-input').fill(text);
    await msgLi(A(), helloSeq).locator('textarea.editor-input').press('Enter');
  };
  await editTo(`hello @${B().name} ${RUN}`);
  await eventually('bob badge: 2 unread, 2 mentions', () => badge(B(), side), (v) => v && v.unread === '2' && v.mentions === '@2');
  await editTo(hello);
  await eventually('bob badge: 2 unread, 1 mention again', () => badge(B(), side), (v) => v && v.unread === '2' && v.mentions === '@1');

  // Bob's second tab has the counts from GET /api/rooms.
  const B2 = await newTab(B(), `bob2-${RUN}`);
  await B2.page.goto(BASE + '/');
  await login(B2, B().name);
  await eventually('bob tab 2 badge', () => badge(B2, side), (v) => v && v.unread === '2' && v.mentions === '@1');
  await shot(B2, '19-unread-badges-bob-tab2.png');

  // Opening the room: the divider stands before the first unread message,
  // the mention is highlighted, and a read up to the last seq goes out.
  await openFromList(B(), side);
  const shownSide = await eventually('bob to show the divider', () => B().page.evaluate(() => {
    const d = document.querySelector('#messages .unread-divider');
    return d && { text: d.textContent, next: d.nextElementSibling.querySelector('.text').textContent };
  }), Boolean);
  assert.deepEqual(shownSide, { text: 'New messages', next: hello });
  const pingLi = await waitShown(B(), ping);
  assert.equal(await msgLi(B(), pingLi.seq).evaluate((e) => e.classList.contains('mention')), true);
  assert.equal(await B().page.locator('#messages li.msg.mention').count(), 1, 'only the mention is highlighted');
  await eventually('bob to read up to the mention', () => framesSent(B(), 'read').filter((f) => f.room === side).map((f) => f.seq),
    (l) => l.some((x) => x >= pingLi.seq));
  await eventually('bob badge to clear', () => badge(B(), side), (v) => v && v.unread === '' && v.mentions === '');
  await shot(B(), '20-divider-mention-bob.png');
  // The second tab hears of the read from the server and clears too.
  await eventually('bob tab 2 badge to clear', () => badge(B2, side), (v) => v && v.unread === '' && v.mentions === '');
  assert.ok(B2.wsReceived.some((f) => f.frame.type === 'read' && f.frame.room === side && f.frame.re === undefined),
    'cleared by a read push');

  // Your own messages never count, even from another device of yours.
  await openFromList(A(), ROOM);
  const bobOne = `one for alice ${RUN}`;
  const bobTwo = `two for alice ${RUN}`;
  await send(B(), bobOne);
  await eventually('alice badge: 1', () => badge(A(), side), (v) => v && v.unread === '1');
  assert.deepEqual(await otherDevice(A(), [{ type: 'join', room: side }, { type: 'send', room: side, text: `alice elsewhere ${RUN}` }]),
    ['welcome', 'joined', 'ack']);
  await send(B(), bobTwo);
  await eventually('alice to receive the second', () => A().wsReceived.some((f) => f.frame.type === 'message' && f.frame.text === bobTwo));
  await eventually('alice badge: 2', () => badge(A(), side), (v) => v && v.unread === '2');
  await sleep(300);
  assert.deepEqual(await badge(A(), side), { unread: '2', mentions: '' }, 'her own message did not count');
  for (const s of [A(), B(), B2]) assertClean(s);
});

step('a reader scrolled up into history has not read what arrives below; scrolling down reads it', async () => {
  const room = `scroll-${RUN}`;
  const readSeq = async () => (await restAs(A(), 'GET', '/api/rooms')).body.find((r) => r.room === room)?.read_seq;
  await joinRoom(B(), room);
  const text = (i) => `history ${i} ${RUN}\nsecond line\nthird line`;
  for (let i = 1; i <= 24; i++) {
    const r = await restAs(B(), 'POST', `/api/rooms/${room}/messages`, { text: text(i) });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  await joinRoom(A(), room);
  const last = await waitShown(A(), text(24));
  await eventually('alice to read to the end', readSeq, (v) => v === last.seq);
  assert.ok(await A().page.$eval('#scroller', (s) => s.scrollHeight > 2 * s.clientHeight), 'the history overflows the pane');

  // Scrolled up to the top, alice is not reading what bob adds below.
  await A().page.$eval('#scroller', (s) => { s.scrollTop = 0; });
  const below = `arrived below ${RUN}`;
  const posted = await restAs(B(), 'POST', `/api/rooms/${room}/messages`, { text: below });
  assert.equal(posted.status, 201, JSON.stringify(posted.body));
  await eventually('alice to receive it', () => A().wsReceived.some((f) => f.frame.type === 'message' && f.frame.text === below));
  await eventually('the "new messages" button', () => A().page.$eval('#new-messages-btn', (b) => !b.hidden));
  await sleep(1000); // four read batches' worth
  assert.deepEqual(framesSent(A(), 'read').filter((f) => f.room === room && f.seq > last.seq), [], 'no read past what was seen');
  assert.equal(await readSeq(), last.seq, 'the read position (every device\'s) stays');
  await shot(A(), '20b-scrolled-up-new-messages.png');

  // The button takes her down: now it is read, up to the newest.
  await A().page.click('#new-messages-btn');
  await eventually('alice to read it once scrolled down', readSeq, (v) => v === posted.body.seq);
  for (const s of [A(), B()]) assertClean(s);
});

step('search: results, "more", and a result opens its room at the message', async () => {
  const B2 = sessions[`bob2-${RUN}`];
  const hits = () => B2.page.$$eval('#search-results button', (els) => els.map((e) => ({
    room: e.dataset.room, seq: Number(e.dataset.seq), text: e.querySelector('.hit-text').textContent,
  })));
  async function search(q) {
    await B2.page.fill('#search-input', q);
    await B2.page.press('#search-input', 'Enter');
    await eventually(`the search for ${q} to finish`, () => B2.page.textContent('#search-status'), (v) => v && v !== 'Searching…');
  }

  // Pages of 20, then "More results" while the server says there is more.
  await search(`filler${RUN}`);
  assert.equal((await hits()).length, 20);
  for (const total of [40, 55]) {
    await B2.page.click('#search-more-btn');
    await eventually(`${total} results`, async () => (await hits()).length, (n) => n === total);
  }
  assert.equal(await B2.page.locator('#search-more-btn').isHidden(), true, 'no "more" after the last page');
  const seqs = (await hits()).map((h) => h.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), 'newest first');
  assert.equal(new Set(seqs).size, 55, 'no result twice');

  // A result in a room this tab never opened, beyond its first page.
  await search(`zebra${RUN}`);
  assert.deepEqual(await hits(), [{ room: ROOM, seq: originalSeq, text: `the original zebra${RUN}` }]);
  await B2.page.click('#search-results button');
  await eventually('the room to open at the message, highlighted', () => B2.page.evaluate((q) => {
    const li = document.querySelector(`#messages li.msg[data-seq="${q}"]`);
    if (!li) return null;
    const r = li.getBoundingClientRect();
    const v = document.getElementById('scroller').getBoundingClientRect();
    return { title: document.getElementById('room-title').textContent, highlighted: li.classList.contains('highlight'), inView: r.top >= v.top && r.bottom <= v.bottom };
  }, originalSeq), (v) => v && v.title === `#${ROOM}` && v.highlighted && v.inView);
  await shot(B2, '21-search-bob-tab2.png');

  // Only the open conversation: nothing about zebras in the side room.
  await openFromList(B2, `side-${RUN}`);
  await B2.page.check('#search-here');
  await search(`zebra${RUN}`);
  assert.equal(await B2.page.textContent('#search-status'), 'No messages found.');
  assert.ok(B2.requests.some((u) => u.includes('/api/search?') && u.includes(`room=side-${RUN}`)));
  assertClean(B2);
});

// ---- rooms with members, roles and moderation (protocol 1.1 §3) --------------------
// alice owns a private room; bob becomes its moderator, kicks carol and bans
// dave; eve, who is not invited, never sees it. The steps are shared with the
// fleet suite (helpers.mjs, membershipSteps).

let shotNo = 22;
async function newUser(name) {
  const s = await newSession(name);
  await s.page.goto(BASE + '/');
  await register(s);
  return s;
}

membershipSteps(step, {
  room: `private-${RUN}`,
  pub: ROOM,
  owner: A,
  mod: B,
  victim: () => sessions[`carol-${RUN}`], // her WebSocket runs through the test: it can drop it
  banned: () => sessions[`dave-${RUN}`],
  outsider: () => sessions[`eve-${RUN}`],
  setup: async () => {
    await newUser(`dave-${RUN}`);
    await newUser(`eve-${RUN}`);
  },
  shot: (name) => `${shotNo++}-${name}.png`,
  secondDevice: async () => {
    const s = await newSession(`alice2-${RUN}`);
    await s.page.goto(BASE + '/');
    return s;
  },
});

// ---- a server admin (`parley admin user promote`) -------------------------------
// bob owns a private room with eve as a plain member. A user promoted with
// the admin command, who has no role there, is offered its tools (and uses
// one); eve, a member, is not. The command writes to the node's own store
// (E2E_DATABASE_URL, from run.sh) while the node runs.

step('a server admin is offered the tools of a room it has no role in, and uses them; a member is not', async () => {
  const room = `staff-${RUN}`;
  const [T1, T2] = [`bob's private room ${RUN}`, `topic set by the server admin ${RUN}`];
  const admin = `root-${RUN}`;
  const [O, E] = [B(), sessions[`eve-${RUN}`]];
  assert.ok(process.env.E2E_DATABASE_URL, 'E2E_DATABASE_URL is not set: run tests/web/run.sh');

  // bob makes the room and adds eve; she opens it from her list.
  await createRoom(O, room, { topic: T1, isPrivate: true });
  await invite(O, E.name);
  await waitMembers(O, { [O.name]: 'owner', [E.name]: 'member' });
  await waitInMyRooms(E, room, true, RECOVER_MS);
  await openFromList(E, room);
  await waitMembers(E, { [O.name]: 'owner', [E.name]: 'member' });

  // Registered over REST, promoted by the command, then logged in in a browser.
  const reg = await fetch(`${BASE}/api/auth/register`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: admin, password: PASSWORD }),
  });
  assert.ok(reg.ok, `register ${admin}: ${reg.status}`);
  const out = execFileSync(process.env.PARLEY_BIN, ['admin', 'user', 'promote', admin], {
    env: { ...process.env, PARLEY_DATABASE_URL: process.env.E2E_DATABASE_URL }, timeout: 30000, encoding: 'utf8',
  });
  assert.match(out, new RegExp(`^${admin} is an admin`));
  const R = await newSession(admin);
  await R.page.goto(BASE + '/');
  await login(R, admin);
  assert.equal(await R.page.evaluate(() => sessionStorage.getItem('parley.admin')), '1', 'the admin flag is kept for a reload');

  // It opens the room by name: let in, yet no member (no "Leave room").
  await joinRoomIn(R, room);
  await eventually('the admin to be offered the tools', () => header(R),
    (h) => h.title === `#${room}` && h.topic === T1 && h.private && h.editTopic && h.modTools && !h.part);
  await eventually('the admin to show the roles', () => memberRoles(R),
    (m) => m[O.name] === 'owner' && m[E.name] === 'member' && !(admin in m && m[admin]));
  // Kick and ban on the member, never on the owner; the bans list is asked for.
  const actions = await R.page.locator('#members .member-action').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')));
  for (const a of [`Kick ${E.name}`, `Ban ${E.name}`, `Make moderator: ${E.name}`]) assert.ok(actions.includes(a), `admin offered ${a}: ${actions.join(', ')}`);
  for (const a of [`Kick ${O.name}`, `Ban ${O.name}`]) assert.ok(!actions.includes(a), `admin not offered ${a}`);
  assert.ok(R.requests.some((u) => u.endsWith(`/api/rooms/${room}/bans`)), 'the admin\'s page asks for the bans');
  assert.equal(await R.page.evaluate(() => document.getElementById('bans-empty').hidden), false, 'no ban listed');

  // eve, a plain member, sees none of it.
  assert.deepEqual(await header(E), { title: `#${room}`, topic: T1, private: true, editTopic: false, modTools: false, part: true });
  assert.equal(await E.page.locator('#members-panel .member-action').count(), 0, 'a member has no actions');

  // The admin sets the topic: bob and eve see it live.
  await setTopic(R, T2);
  for (const s of [O, E, R]) {
    await waitEventLine(s, `${admin} set the topic to “${T2}”`);
    await eventually(`${s.name} header topic`, () => header(s), (h) => h.topic === T2);
  }
  await shot(R, `${shotNo++}-server-admin.png`);
  for (const s of [O, E, R]) assertClean(s);
});

