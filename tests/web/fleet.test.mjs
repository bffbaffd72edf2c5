// The web UI across a fleet, in real headless Chromium: alice's browser talks
// to node A, bob's (and bob's second tab, another device) to node B; the
// nodes share PostgreSQL and Redis and nothing else. Every feature below
// only works if what one node stores or pushes reaches the other.
//
// Run it with tests/web/run.sh, which starts the fleet (parley-fleet) and
// sets FLEET_NODE_A / FLEET_NODE_B (http://127.0.0.1:PORT of two nodes).
// Steps run in order and share the sessions; a step whose predecessor
// failed is skipped. Every wait is bounded and polls the page.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  sessions, eventually, launchBrowser, closeBrowser, newSession, newTab, assertClean, shot,
  waitConnected, shown, waitShown, send, step as stepIn, register, login, joinRoom, liOf, msgLi,
  framesSent, rowAction, badge, openFromList, membershipSteps,
} from './helpers.mjs';

const NODE_A = process.env.FLEET_NODE_A;
const NODE_B = process.env.FLEET_NODE_B;

const RUN = Math.random().toString(36).slice(2, 8);
const ROOM = `fleet-${RUN}`;
const SIDE = `fleet-side-${RUN}`;

const step = (name, fn) => stepIn(name, fn, { failurePrefix: 'fleet-' });
const A = () => sessions[`alice-${RUN}`];
const B = () => sessions[`bob-${RUN}`];
const B2 = () => sessions[`bob2-${RUN}`];

// ws://host:port/ws of a node's http://host:port.
const wsOf = (base) => `${base.replace(/^http/, 'ws')}/ws`;

// The page is served by `base` and its WebSocket went there too.
function assertOn(s, base) {
  assert.ok(s.page.url().startsWith(`${base}/`), `${s.name}: page served by ${base} (is ${s.page.url()})`);
  assert.ok(s.wsUrls.length > 0, `${s.name}: opened a WebSocket`);
  assert.ok(s.wsUrls.every((u) => u === wsOf(base)), `${s.name}: every WebSocket to ${wsOf(base)}: ${s.wsUrls.join(', ')}`);
}

before(async () => {
  assert.ok(NODE_A && NODE_B, 'FLEET_NODE_A / FLEET_NODE_B are not set: run tests/web/run.sh, which starts the fleet');
  assert.notEqual(NODE_A, NODE_B, 'two different nodes');
  await launchBrowser();
  await newSession(`alice-${RUN}`);
  await newSession(`bob-${RUN}`);
});

after(async () => {
  await closeBrowser();
});

let bobsSeq = 0; // a message of bob's (alice replies to it)

step('alice on node A and bob on node B register, join a room and talk live', async () => {
  for (const [s, base] of [[A(), NODE_A], [B(), NODE_B]]) {
    const resp = await s.page.goto(base + '/', { waitUntil: 'load' });
    assert.equal(resp.status(), 200);
    await s.page.locator('#login-form').waitFor({ state: 'visible' });
  }
  // Accounts live in the shared PostgreSQL: each registers on its own node.
  for (const s of [A(), B()]) await register(s);
  for (const s of [A(), B()]) await joinRoom(s, ROOM);
  assertOn(A(), NODE_A);
  assertOn(B(), NODE_B);
  // Presence crosses nodes: each sees the other online in the room.
  for (const [s, other] of [[A(), B()], [B(), A()]]) {
    await eventually(`${s.name} member list to show ${other.name}`,
      () => s.page.$$eval('#members li.member', (els) => els.map((e) => e.dataset.user)),
      (users) => users.includes(other.name) && users.includes(s.name));
    await eventually(`${s.name} room header to say 2 online`, () => s.page.textContent('#room-meta'), (v) => v === '2 online');
  }

  const hello = `hello from node A ${RUN}`;
  await send(A(), hello);
  const own = await waitShown(A(), hello);
  const theirs = await waitShown(B(), hello);
  assert.equal(own.seq, theirs.seq, 'the same seq on both nodes');
  assert.equal(theirs.from, A().name);

  const answer = `and hello from node B ${RUN}`;
  await send(B(), answer);
  bobsSeq = (await waitShown(A(), answer)).seq;
  assert.equal((await waitShown(B(), answer)).seq, bobsSeq);
  assert.ok(bobsSeq > own.seq);
  assert.deepEqual(await shown(A()), await shown(B()), 'both browsers show the same conversation');
  await shot(B(), 'fleet-01-conversation-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

let editedSeq = 0; // alice's message, edited (the search step looks for it)

step('edits, reactions, replies and deletes made on node A show live on node B', async () => {
  // Edit: alice changes her message in place; bob sees the new text live.
  const first = `first wording kiwi${RUN}`;
  const second = `second wording mango${RUN}`;
  await send(A(), first);
  editedSeq = (await waitShown(B(), first)).seq;
  await rowAction(A(), editedSeq, 'Edit your message');
  const editor = msgLi(A(), editedSeq).locator('textarea.editor-input');
  assert.equal(await editor.inputValue(), first);
  await editor.fill(second);
  await editor.press('Enter');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show the edit`, () => liOf(s, editedSeq),
      (v) => v && v.text === second && v.edited === '(edited)');
  }

  // Reaction: alice picks one on node A, bob sees the chip; bob adds his on
  // node B, alice sees the count go to two.
  await rowAction(A(), editedSeq, `Add a reaction to ${A().name}'s message`);
  await msgLi(A(), editedSeq).locator('.reaction-picker').getByRole('button', { name: 'React with 🎉' }).click();
  const chip = (s) => s.page.evaluate((q) => {
    const c = document.querySelector(`#messages li.msg[data-seq="${q}"] button.reaction`);
    return c && { text: c.textContent, title: c.title, pressed: c.getAttribute('aria-pressed') };
  }, editedSeq);
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show alice's reaction`, () => chip(s),
      (v) => v && v.text === '🎉 1' && v.title === A().name && v.pressed === String(s === A()));
  }
  await msgLi(B(), editedSeq).locator('button.reaction').click();
  const both = [A().name, B().name].sort().join(', ');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show two reactions`, () => chip(s),
      (v) => v && v.text === '🎉 2' && v.title === both && v.pressed === 'true');
  }

  // Reply: alice answers bob's message; bob sees the quote.
  await rowAction(A(), bobsSeq, `Reply to ${B().name}`);
  const bobsText = `and hello from node B ${RUN}`;
  assert.equal(await A().page.textContent('#reply-text'), `Replying to ${B().name}: ${bobsText}`);
  const reply = `a reply across nodes ${RUN}`;
  await send(A(), reply);
  const replySeq = (await waitShown(B(), reply)).seq;
  assert.equal(framesSent(A(), 'send').find((f) => f.text === reply).reply_to, bobsSeq, 'the send carries reply_to');
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to quote bob's message`, () => liOf(s, replySeq),
      (v) => v && v.quote === `↪ ${B().name}: ${bobsText}`);
  }

  // Delete: alice deletes one after the confirmation; bob sees the placeholder.
  const doomed = `doomed papaya${RUN}`;
  await send(A(), doomed);
  const doomedSeq = (await waitShown(B(), doomed)).seq;
  await rowAction(A(), doomedSeq, 'Delete your message');
  await msgLi(A(), doomedSeq).getByRole('button', { name: 'Yes, delete the message' }).click();
  for (const s of [A(), B()]) {
    await eventually(`${s.name} to show the deleted placeholder`, () => liOf(s, doomedSeq),
      (v) => v && v.text === 'message deleted');
  }
  await shot(B(), 'fleet-02-events-live-bob.png');

  // Bob reloads (node B, history from the shared store): the same state.
  await B().page.reload({ waitUntil: 'load' });
  await waitConnected(B());
  assertOn(B(), NODE_B);
  await eventually('bob to show every change after a reload', async () => [
    await liOf(B(), editedSeq), await liOf(B(), replySeq), await liOf(B(), doomedSeq)],
  ([e, r, d]) => e && e.text === second && e.edited === '(edited)' && e.reactions === '🎉 2'
    && r && r.quote === `↪ ${B().name}: ${bobsText}` && d && d.text === 'message deleted');
  await shot(B(), 'fleet-03-events-after-reload-bob.png');
  for (const s of [A(), B()]) assertClean(s);
});

step('unread badges count node A\'s messages on node B; a read on node B clears bob\'s tab on node A', async () => {
  await joinRoom(A(), SIDE);
  await send(A(), `first in the side room ${RUN}`);
  await joinRoom(B(), SIDE);
  await waitShown(B(), `first in the side room ${RUN}`);
  await eventually('bob to mark it read', () => framesSent(B(), 'read').filter((f) => f.room === SIDE).length, (n) => n >= 1);
  await openFromList(B(), ROOM); // the side room stays joined, out of sight

  // Live on node B: two messages from node A, one mentioning bob.
  const hello = `hello bob ${RUN}`;
  const ping = `ping @${B().name}, look ${RUN}`;
  await send(A(), hello);
  await send(A(), ping);
  await eventually('bob badge (node B): 2 unread, 1 mention', () => badge(B(), SIDE),
    (v) => v && v.unread === '2' && v.mentions === '@1');

  // Bob's second tab, on node A: the counts from node A's GET /api/rooms.
  const tab2 = await newTab(B(), `bob2-${RUN}`);
  await tab2.page.goto(NODE_A + '/');
  await login(tab2, B().name);
  assertOn(tab2, NODE_A);
  await eventually('bob tab 2 badge (node A)', () => badge(tab2, SIDE), (v) => v && v.unread === '2' && v.mentions === '@1');
  await shot(tab2, 'fleet-04-unread-bob-tab2-node-a.png');

  // Bob opens the room on node B: his read goes to node B...
  await openFromList(B(), SIDE);
  const pingLi = await waitShown(B(), ping);
  await eventually('bob to read up to the mention', () => framesSent(B(), 'read').filter((f) => f.room === SIDE).map((f) => f.seq),
    (l) => l.includes(pingLi.seq));
  await eventually('bob badge (node B) to clear', () => badge(B(), SIDE), (v) => v && v.unread === '' && v.mentions === '');
  // ...and node A pushes it to his tab there, which clears its badge.
  await eventually('bob tab 2 (node A) to get the read push',
    () => B2().wsReceived.some((f) => f.frame.type === 'read' && f.frame.room === SIDE && f.frame.re === undefined
      && f.frame.seq >= pingLi.seq));
  await eventually('bob tab 2 badge (node A) to clear', () => badge(B2(), SIDE), (v) => v && v.unread === '' && v.mentions === '');
  assert.equal(framesSent(B2(), 'read').length, 0, 'tab 2 sent no read of its own');
  await shot(B2(), 'fleet-05-read-cleared-bob-tab2-node-a.png');
  for (const s of [A(), B(), B2()]) assertClean(s);
});

step('search on node B finds a message posted on node A by its edited text', async () => {
  const s = B();
  const hits = () => s.page.$$eval('#search-results button', (els) => els.map((e) => ({
    room: e.dataset.room, seq: Number(e.dataset.seq), text: e.querySelector('.hit-text').textContent,
  })));
  async function search(q) {
    await s.page.fill('#search-input', q);
    await s.page.press('#search-input', 'Enter');
    await eventually(`the search for ${q} to finish`, () => s.page.textContent('#search-status'), (v) => v && v !== 'Searching…');
  }

  await search(`mango${RUN}`);
  assert.deepEqual(await hits(), [{ room: ROOM, seq: editedSeq, text: `second wording mango${RUN}` }]);
  assert.ok(s.requests.some((u) => u.startsWith(`${NODE_B}/api/search?`)), 'searched on node B');
  // The words it had before the edit, and a deleted message, are not found.
  for (const gone of [`kiwi${RUN}`, `papaya${RUN}`]) {
    await search(gone);
    assert.equal(await s.page.textContent('#search-status'), 'No messages found.', `no result for ${gone}`);
  }
  // The result opens its room (bob is in the side room) at the message.
  await search(`mango${RUN}`);
  await s.page.click('#search-results button');
  await eventually('the room to open at the message, highlighted', () => s.page.evaluate((q) => {
    const li = document.querySelector(`#messages li.msg[data-seq="${q}"]`);
    if (!li) return null;
    const r = li.getBoundingClientRect();
    const v = document.getElementById('scroller').getBoundingClientRect();
    return { title: document.getElementById('room-title').textContent, highlighted: li.classList.contains('highlight'), inView: r.top >= v.top && r.bottom <= v.bottom };
  }, editedSeq), (v) => v && v.title === `#${ROOM}` && v.highlighted && v.inView);
  await shot(s, 'fleet-06-search-bob-node-b.png');
  assertClean(s);
});

// ---- rooms with members, roles and moderation, across nodes ---------------------------
// alice (node A) owns a private room; bob (node B) becomes its moderator,
// kicks carol (node A) and bans dave (node B); eve (node A), not invited,
// never sees it; alice's second browser logs in on node B. Every change is
// made on one node and must show live on the other (helpers.mjs,
// membershipSteps, shared with the single-node suite).

let shotNo = 7;
async function newUser(name, base, opts) {
  const s = await newSession(name, opts);
  await s.page.goto(base + '/');
  await register(s);
  assert.ok(s.page.url().startsWith(`${base}/`), `${name}: served by ${base}`);
  if (!opts) assertOn(s, base);
  return s;
}

membershipSteps(step, {
  room: `fleet-private-${RUN}`,
  pub: ROOM,
  owner: A,
  mod: B,
  victim: () => sessions[`carol-${RUN}`],
  banned: () => sessions[`dave-${RUN}`],
  outsider: () => sessions[`eve-${RUN}`],
  setup: async () => {
    // carol's WebSocket runs through the test (it drops it); she has a room
    // open, joined again on every reconnect.
    const C = await newUser(`carol-${RUN}`, NODE_A, { routeWs: true });
    await joinRoom(C, ROOM);
    await newUser(`dave-${RUN}`, NODE_B);
    await newUser(`eve-${RUN}`, NODE_A);
  },
  shot: (name) => `fleet-${String(shotNo++).padStart(2, '0')}-${name}.png`,
  secondDevice: async () => {
    const s = await newSession(`alice2-${RUN}`);
    await s.page.goto(NODE_B + '/');
    return s;
  },
});
