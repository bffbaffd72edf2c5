/*
 * Parley web client.
 *
 * A plain script (no modules, no build step) loaded with `defer`, so the DOM is
 * parsed when it runs. The server's CSP forbids inline script, inline handlers
 * and inline styles: every handler is attached here and every look is a class.
 *
 * Sections: constants · pure helpers · state · read state · room state
 * (members, roles, topic) · DOM helpers · HTTP · transport (WebSocket,
 * reconnect, ping) · protocol handlers · actions (send, join, leave, part) ·
 * room management (create, topic, invite, roles, kick, ban) · message actions
 * (edit, delete, react, reply, jump) · search · rendering · UI wiring · start.
 *
 * Security rule for this file: user-provided text (messages, names, room
 * names, server error messages) only ever reaches the page through
 * textContent / createTextNode. There is no innerHTML anywhere.
 */
(function () {
  'use strict';

  // ===== Constants =====================================================

  const CLIENT_NAME = 'parley-web/0.1';
  const MAX_TEXT_BYTES = 4096;            // protocol: text of one message
  const MAX_FRAME_BYTES = 16 * 1024;      // protocol: larger frames get close 1009
  const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
  const USER_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const ROOMS_REFRESH_MS = 10000;
  const PING_EVERY_MS = 20000;
  const PONG_TIMEOUT_MS = 10000;
  const WELCOME_TIMEOUT_MS = 15000;       // server allows 10 s for hello; add connect time
  const BACKOFF_START_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const TYPING_SEND_EVERY_MS = 3000;
  const TYPING_SHOW_MS = 5000;
  const OLDER_PAGE = 50;
  const FORWARD_PAGE = 100;
  const HISTORY_MAX = 500;                // server's largest history page
  const UNREAD_CAP = 999;                 // server counts unread up to this; shown as "999+"
  const READ_DELAY_MS = 250;              // batch read receipts while messages stream in
  const HIGHLIGHT_MS = 2500;              // a jumped-to message stays highlighted this long
  const JUMP_CONTEXT = 10;                // older messages loaded beyond a jump target, to show what led to it
  const SEARCH_PAGE = 20;
  const MAX_QUERY_BYTES = 256;            // protocol: longer queries are bad_request
  const MAX_TOPIC_BYTES = 512;            // protocol: a room topic
  const MAX_REASON_BYTES = 512;           // protocol: a ban reason
  const ROLES = ['owner', 'moderator', 'member']; // highest first
  const ROSTER_DELAY_MS = 150;            // member events in a burst refetch the list once
  const REACTION_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
  const EDGE_PX = 80;                     // "near the top/bottom" of the scroller
  const STORE = { token: 'parley.token', user: 'parley.user', admin: 'parley.admin', rooms: 'parley.rooms', active: 'parley.active' };

  // The server's close codes: the reason it sends with each, and what this
  // client does next. A mirror of `CloseCode` in crates/protocol/src/close.rs,
  // the source of truth (its doc says why each code gets its action); a unit
  // test there parses this table (one row per line) and fails when they differ.
  const CLOSE_CODES = Object.freeze({
    1000: { name: 'normal', reason: '', action: 'reconnect_with_backoff', minDelayMs: 0 },
    1001: { name: 'going_away', reason: 'node is draining; reconnect and resume', action: 'reconnect_now', minDelayMs: 0 },
    1002: { name: 'protocol_error', reason: '', action: 'stop', minDelayMs: 0 },
    1003: { name: 'unsupported_data', reason: 'binary frames are not supported', action: 'stop', minDelayMs: 0 },
    1007: { name: 'invalid_payload', reason: 'invalid UTF-8', action: 'stop', minDelayMs: 0 },
    1008: { name: 'policy_violation', reason: 'too many malformed frames', action: 'stop', minDelayMs: 0 },
    1009: { name: 'too_big', reason: 'frame too large', action: 'stop', minDelayMs: 0 },
    4401: { name: 'unauthorized', reason: 'unauthorized', action: 'stop', minDelayMs: 0 },
    4408: { name: 'slow_consumer', reason: 'slow consumer: outbound queue overflowed; resume with since', action: 'reconnect_now', minDelayMs: 0 },
    4429: { name: 'rate_limited', reason: 'rate limited repeatedly', action: 'reconnect_with_backoff', minDelayMs: 10000 },
  });
  const CLOSE_UNAUTHORIZED = 4401;

  // Human text for the protocol's error codes (shown in toasts, never blocking).
  const ERROR_TEXT = {
    rate_limited: 'Slow down — you are sending too fast.',
    unavailable: 'Server unavailable, retrying…',
    forbidden: 'You are not allowed to do that.',
    not_found: 'Not found.',
    too_large: 'Message too large (limit 4096 bytes).',
    bad_request: 'The server rejected the request.',
    conflict: 'Conflict.',
    internal: 'Server error.',
  };

  // ===== Pure helpers (no DOM, no state) ===============================

  const textEncoder = new TextEncoder();
  function utf8Length(s) { return textEncoder.encode(s).length; }

  function validateRoomName(name) {
    if (!name) return 'Enter a room name.';
    if (ROOM_RE.test(name)) return null;
    return 'Room names are 1–64 characters of lowercase letters, digits, "-" and "_", starting with a letter or digit.';
  }

  function validateUsername(name) {
    if (!name) return 'Enter a username.';
    if (USER_RE.test(name)) return null;
    return 'Usernames are 1–32 characters: letters, digits, ".", "_" and "-".';
  }

  function validatePassword(pw) {
    const n = utf8Length(pw);
    if (n < 8) return 'Passwords must be at least 8 characters long.';
    if (n > 256) return 'Passwords must be at most 256 bytes long.';
    return null;
  }

  function validateMessageText(text) {
    const n = utf8Length(text);
    if (n <= MAX_TEXT_BYTES) return null;
    return `Message too long: ${n} bytes, the limit is ${MAX_TEXT_BYTES} bytes (UTF-8). Remove ${n - MAX_TEXT_BYTES} bytes.`;
  }

  // DM rooms are `dm:<a>:<b>` with the two names lowercased (usernames are
  // unique case-insensitively, and a DM room is named after the case-folded
  // names whatever spelling is shown) and sorted. JS string order is UTF-16
  // code unit order, which equals byte order for the ASCII-only names the
  // protocol allows, so this matches what the server computes.
  function dmRoomName(a, b) {
    const pair = [a.toLowerCase(), b.toLowerCase()].sort();
    return `dm:${pair[0]}:${pair[1]}`;
  }

  function isDmRoom(room) { return typeof room === 'string' && room.startsWith('dm:'); }

  // The other participant of a DM room, or null if `me` is not in it.
  // Usernames cannot contain ':' so a plain split is exact.
  function dmPeer(room, me) {
    const parts = String(room).split(':');
    if (parts.length !== 3 || parts[0] !== 'dm') return null;
    const self = String(me).toLowerCase();
    if (parts[1] === self) return parts[2];
    if (parts[2] === self) return parts[1];
    return null;
  }

  // A room's log holds messages and, since protocol 1.1, the events that
  // change them (edited, deleted, reaction), each with its own seq, and the
  // room's own events (member, topic), shown as lines of their own.
  const EVENT_TYPES = new Set(['edited', 'deleted', 'reaction']);

  function isMessage(m) { return m.type === undefined || m.type === 'message'; }
  function isRoomEvent(m) { return m.type === 'member' || m.type === 'topic'; }

  function isValidEvent(m) {
    if (!m || !Number.isSafeInteger(m.seq) || m.seq <= 0 || typeof m.from !== 'string') return false;
    if (isMessage(m)) return typeof m.text === 'string';
    if (m.type === 'member') return typeof m.user === 'string' && typeof m.change === 'string';
    if (m.type === 'topic') return typeof m.topic === 'string';
    return EVENT_TYPES.has(m.type) && Number.isSafeInteger(m.target);
  }

  // A member or topic event as a line of the timeline.
  function roomEventText(e) {
    if (e.type === 'topic') return e.topic ? `${e.from} set the topic to “${e.topic}”` : `${e.from} cleared the topic`;
    const reason = e.reason ? `: ${e.reason}` : '';
    switch (e.change) {
      case 'added': return `${e.from} added ${e.user}`;
      case 'removed': return sameUser(e.from, e.user) ? `${e.user} left` : `${e.user} was kicked by ${e.from}${reason}`;
      case 'banned': return `${e.user} was banned by ${e.from}${reason}`;
      case 'unbanned': return `${e.user} was unbanned by ${e.from}`;
      case 'role': return `${e.user} is now ${e.role || 'a member'}`;
      default: return `${e.from} changed ${e.user}'s membership`;
    }
  }

  // Room roles, compared as the server does (protocol 1.1 §3): 0 is no role.
  function roleRank(role) { return role ? ROLES.length - ROLES.indexOf(role) : 0; }
  function isModerator(role) { return roleRank(role) >= roleRank('moderator'); }
  // The role whose tools we are offered in `room`: a server admin moderates
  // every room as its owner would (the server still decides).
  function myRole(room) { return state.admin && room && !room.isDm ? 'owner' : room && room.role; }

  // Whether `mine` may kick or ban someone with role `theirs`: owners and
  // moderators, never against a higher role, never an owner. The server
  // decides; this only spares the others useless buttons.
  function canRemove(mine, theirs) {
    return isModerator(mine) && theirs !== 'owner' && roleRank(theirs) <= roleRank(mine);
  }

  // Merge events into a room's seq-keyed Map and return only those that
  // were new, in seq order. Keyed by seq because seq is unique per room and the
  // same event legitimately arrives more than once (ack + push, resume
  // overlap, history + live stream): the first copy wins, nothing shows twice.
  // A message from a history list shows its state as of that read, so it
  // records the list's newest seq: only later events change it (applyEvent).
  function mergeMessages(store, incoming) {
    const list = Array.isArray(incoming) ? incoming : [];
    let top = 0;
    for (const m of list) if (m && Number.isSafeInteger(m.seq) && m.seq > top) top = m.seq;
    const added = [];
    for (const m of list) {
      if (!isValidEvent(m) || store.has(m.seq)) continue;
      if (isMessage(m)) m.stateSeq = Math.max(m.seq, top);
      store.set(m.seq, m);
      added.push(m);
    }
    return added.sort((a, b) => a.seq - b.seq);
  }

  // Applies an edit, delete or reaction to the message it targets, if we
  // hold it and the event is newer than its state (events come in seq order
  // per page, but pages may arrive out of order). Returns the changed message.
  function applyEvent(store, e) {
    const m = store.get(e.target);
    if (!m || !isMessage(m) || (m.stateSeq || m.seq) >= e.seq) return null;
    m.stateSeq = e.seq;
    if (e.type === 'edited' && typeof e.text === 'string') {
      m.text = e.text;
      m.edited = e.ts;
    } else if (e.type === 'deleted') {
      m.deleted = true;
      m.text = '';
      m.reactions = {};
    } else if (e.type === 'reaction' && typeof e.emoji === 'string') {
      const reactions = m.reactions && typeof m.reactions === 'object' ? { ...m.reactions } : {};
      const users = (Array.isArray(reactions[e.emoji]) ? reactions[e.emoji] : []).filter((u) => u !== e.from);
      if (e.on === true) users.push(e.from);
      if (users.length > 0) reactions[e.emoji] = users.sort();
      else delete reactions[e.emoji];
      m.reactions = reactions;
    }
    return m;
  }

  // Highest seq s >= from such that from+1..s are all present. Seqs are gapless
  // on the server, so anything above this that we lack is a hole to fetch.
  function contiguousHigh(store, from) {
    let s = from;
    while (store.has(s + 1)) s += 1;
    return s;
  }

  // Exponential backoff with "equal jitter": half fixed, half random, so
  // many clients dropped together do not come back in lockstep.
  function backoffDelay(attempt, random) {
    const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * Math.pow(2, Math.max(0, attempt - 1)));
    return base / 2 + random() * (base / 2);
  }

  // What to do after the socket closed with `code`: CLOSE_CODES' action; a
  // code the server does not send (1006 for a broken connection, 0 for a
  // socket we dropped) is a lost connection: reconnect with backoff.
  function closeAction(code) {
    const known = CLOSE_CODES[code];
    return known ? known.action : 'reconnect_with_backoff';
  }

  function sameUser(a, b) { return String(a).toLowerCase() === String(b).toLowerCase(); }

  // Whether `text` mentions `user` as "@user", any case, not inside a longer
  // name. The server's rule (parley_protocol::names::mentions), mirrored so
  // the highlight matches the server's mention count: usernames are ASCII, a
  // name character before the "@" or after the name makes it another word,
  // except a trailing "." that ends a sentence ("thanks @bob.").
  const NAME_CHAR = /[A-Za-z0-9_.-]/;
  function mentionsUser(text, user) {
    if (!user || typeof text !== 'string') return false;
    const lower = text.toLowerCase();
    const name = '@' + user.toLowerCase();
    for (let at = lower.indexOf(name); at !== -1; at = lower.indexOf(name, at + 1)) {
      const before = at === 0 || !NAME_CHAR.test(text[at - 1]);
      const next = text[at + name.length];
      const after = next === undefined || (next === '.' ? !NAME_CHAR.test(text[at + name.length + 1] || ' ') : !NAME_CHAR.test(next));
      if (before && after) return true;
    }
    return false;
  }

  function countText(n) { return n >= UNREAD_CAP ? `${UNREAD_CAP}+` : String(n); }

  function typingText(users) {
    if (users.length === 0) return '';
    if (users.length === 1) return `${users[0]} is typing…`;
    if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
    return 'Several people are typing…';
  }

  function formatTime(date, now) {
    const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (date.toDateString() === now.toDateString()) return time;
    const opts = { month: 'short', day: 'numeric' };
    if (date.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
    return `${date.toLocaleDateString([], opts)} ${time}`;
  }

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a); // works on plain http too, unlike randomUUID
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // Nonces make sends idempotent: a retry after reconnect reuses the nonce and
  // the server stores the message once. ≤ 64 chars per protocol (~30 here).
  const nonceTab = randomHex(8);
  let nonceCounter = 0;
  function makeNonce() {
    nonceCounter += 1;
    return `w-${nonceTab}-${Date.now().toString(36)}-${nonceCounter.toString(36)}`;
  }

  // ===== State ===========================================================

  function newRoom(name) {
    return {
      name,
      isDm: isDmRoom(name),
      messages: new Map(),   // seq -> Message
      minSeq: 0, maxSeq: 0,  // 0 = no messages yet
      wanted: false,         // the user has it open: (re)join it on every connection
      joined: false,         // joined on the current connection
      joinPending: false,
      everJoined: false,     // we hold history from a join: re-join with `since`
      members: new Set(),
      typing: new Map(),     // user -> expiry (ms)
      unread: 0,             // unread messages of others (badge); capped like the server's
      mentions: 0,           // the unread ones that mention us
      readSeq: 0,            // our stored read position (0: never read)
      countedAbove: 0,       // seqs up to here are already in `unread` (or were read)
      dividerAfter: null,    // the read position when the room was opened: "new messages" goes after it
      loadingOlder: false, olderExhausted: false,
      filling: false,        // forward paging (resume catch-up or gap fill) in flight
      membersOnline: null,
      lastActivity: 0,
      retryTimer: null,
      // Protocol 1.1 §3. The joined frame says how things stand; only room
      // events after it (seq above `stateSeq`) change them, each kind only
      // forwards (a gap fill may arrive after a later push).
      member: false,         // one of "my rooms" (GET /api/rooms member:true, a join, an invite)
      role: null,            // our role: 'owner' | 'moderator' | 'member' | null
      topic: '',
      private: false,
      stateSeq: 0, topicSeq: 0, roleSeq: 0,
      memberChangedAt: 0,    // when we last learnt our membership: older room lists do not override it
      ejection: null,        // the member event that took us out: { from, change, reason }
      roster: null,          // lowercased name -> { user, role } (GET members), null: not loaded
      rosterLoading: false, rosterDirty: false, rosterTimer: null,
      bans: null,            // [{ user, by, reason }] for owners and moderators, null: not loaded
    };
  }

  const state = {
    token: null,
    me: null,
    admin: false,          // a server admin (said by login): every room's tools
    ws: null,
    connected: false,       // welcome received on the current socket
    halted: false,          // the server closed with a "stop" code: no reconnect
    attempt: 0,             // reconnect attempts since the last welcome
    timers: { reconnect: null, welcome: null, ping: null, pong: null, rooms: null, roomsSoon: null, sidebar: null, typing: null, read: null },
    nextId: 1,
    pending: new Map(),     // request id -> { kind, room?, nonce?, ... }
    unconfirmed: [],        // edits, deletes, reactions whose answer a dropped socket took: sent again on welcome
    rooms: new Map(),       // name -> room state
    roomList: [],           // last GET /api/rooms
    active: null,           // room name shown in the conversation pane
    outbox: new Map(),      // nonce -> { nonce, room, peer, text, state, error, retries, retryTimer }
    lastTypingSent: new Map(),
    msgUi: null,            // the one message with an open panel: { room, seq, mode: 'edit'|'react'|'delete', draft }
    replyTo: null,          // { room, seq } the composer answers
    jump: null,             // { room, seq } to scroll to once it is loaded
    search: { q: '', room: null, next: null, generation: 0 },
    notice: null,           // why no conversation is open ("You were removed from #x by …")
    topicEdit: null,        // the room whose topic editor is open
    partConfirm: null,      // the room whose "Leave room" awaits a confirmation
  };

  function getRoom(name) {
    let room = state.rooms.get(name);
    if (!room) { room = newRoom(name); state.rooms.set(name, room); }
    return room;
  }

  function activeRoom() { return state.active ? state.rooms.get(state.active) || null : null; }

  function roomLabel(room) { return roomNameLabel(room.name); }
  function roomNameLabel(name) {
    if (isDmRoom(name)) return '@' + (dmPeer(name, state.me) || name);
    return '#' + name;
  }

  // sessionStorage: per tab, gone when the tab closes (the brief's choice).
  function storageGet(key) { try { return sessionStorage.getItem(key); } catch (e) { return null; } }
  function storageSet(key, value) {
    try {
      if (value == null) sessionStorage.removeItem(key); else sessionStorage.setItem(key, value);
    } catch (e) { /* private mode or quota: the session just won't survive a reload */ }
  }
  function saveSession() {
    storageSet(STORE.token, state.token);
    storageSet(STORE.user, state.me);
    storageSet(STORE.admin, state.token && state.admin ? '1' : null);
    const wanted = [...state.rooms.values()].filter((r) => r.wanted).map((r) => r.name);
    storageSet(STORE.rooms, state.token ? JSON.stringify(wanted) : null);
    storageSet(STORE.active, state.active);
  }

  // Merges events into a room, keeping the derived fields right; returns the
  // new lines (messages, member and topic events). Edits, deletes and
  // reactions re-render their message; member and topic events newer than
  // the room's state change it. Unread counting: everything up to
  // `countedAbove` is already in the server's count (joined, GET /api/rooms)
  // or ours, so each message is counted once however often it arrives.
  function mergeInto(room, incoming) {
    const added = [];
    const changed = new Set();
    for (const m of mergeMessages(room.messages, incoming)) {
      if (room.minSeq === 0 || m.seq < room.minSeq) room.minSeq = m.seq;
      if (m.seq > room.maxSeq) room.maxSeq = m.seq;
      const fresh = m.seq > room.countedAbove;
      if (fresh) room.countedAbove = m.seq;
      if (isRoomEvent(m)) {
        if (m.seq > room.stateSeq) applyRoomEvent(room, m);
        added.push(m);
        continue;
      }
      if (!isMessage(m)) {
        const target = room.messages.get(m.target);
        // Deleting an unread message takes it out of the count, as the server does.
        const unread = target && isMessage(target) && isUnreadFor(room, target) && !isViewing(room);
        const textBefore = target ? target.text : '';
        if (applyEvent(room.messages, m)) {
          if (unread && m.type === 'deleted') forgetUnread(room, textBefore);
          // The server counts mentions in the current text: so do we.
          if (unread && m.type === 'edited') recountMention(room, textBefore, m.text);
          changed.add(target);
        }
        continue;
      }
      const t = Date.parse(m.ts);
      if (Number.isFinite(t) && t > room.lastActivity) room.lastActivity = t;
      // Our own message seen via push or history: its pending copy is done.
      if (sameUser(m.from, state.me) && m.nonce) resolveOutbox(m.nonce, room.name);
      if (fresh && isUnreadFor(room, m) && !isViewing(room)) countUnread(room, m.text);
      added.push(m);
    }
    if (room.name === state.active) {
      for (const m of changed) { rerenderMessage(room.name, m.seq); rerenderReplies(room.name, m.seq); }
    }
    return added;
  }

  // ===== Read state ========================================================

  // A message of someone else, not deleted, after our read position.
  function isUnreadFor(room, m) {
    return !m.deleted && !sameUser(m.from, state.me) && m.seq > room.readSeq;
  }

  function countUnread(room, text) {
    room.unread = Math.min(UNREAD_CAP, room.unread + 1);
    if (mentionsUser(text, state.me)) room.mentions = Math.min(UNREAD_CAP, room.mentions + 1);
  }

  function forgetUnread(room, text) {
    room.unread = Math.max(0, room.unread - 1);
    if (mentionsUser(text, state.me)) room.mentions = Math.max(0, room.mentions - 1);
  }

  function recountMention(room, before, after) {
    const was = mentionsUser(before, state.me);
    const is = mentionsUser(after, state.me);
    if (is && !was) room.mentions = Math.min(UNREAD_CAP, room.mentions + 1);
    if (was && !is) room.mentions = Math.max(0, room.mentions - 1);
  }

  // The user is looking at the room: what arrives is read, not unread.
  function isViewing(room) { return room.name === state.active && !document.hidden; }

  // Our read position moved (our read, another device's, or the server's
  // list). When we hold every message after it we can count exactly; when
  // it covers everything counted, nothing is unread; otherwise the counts
  // stay until the next joined or GET /api/rooms corrects them.
  function applyReadPosition(room, seq) {
    if (!Number.isSafeInteger(seq) || seq <= room.readSeq) return;
    room.readSeq = seq;
    if (seq >= room.countedAbove) {
      room.unread = 0;
      room.mentions = 0;
    } else if (room.minSeq > 0 && room.minSeq <= seq + 1) {
      room.unread = 0;
      room.mentions = 0;
      for (const m of room.messages.values()) {
        if (isMessage(m) && m.seq <= room.countedAbove && isUnreadFor(room, m)) countUnread(room, m.text);
      }
    }
    scheduleSidebar();
  }

  // Counts from the server (joined, GET /api/rooms) replace ours: they cover
  // every message up to `upTo`, including those we never held.
  function setServerUnread(room, readSeq, unread, mentions, upTo) {
    if (Number.isSafeInteger(readSeq)) room.readSeq = Math.max(room.readSeq, readSeq);
    if (Number.isSafeInteger(unread)) room.unread = Math.min(UNREAD_CAP, unread);
    if (Number.isSafeInteger(mentions)) room.mentions = Math.min(UNREAD_CAP, mentions);
    if (Number.isSafeInteger(upTo)) room.countedAbove = Math.max(room.countedAbove, upTo);
    scheduleSidebar();
  }

  // Reads are batched: a burst of messages in the open room sends one.
  function scheduleRead() {
    if (state.timers.read) return;
    state.timers.read = setTimeout(markActiveRead, READ_DELAY_MS);
  }

  // Marks the open room read as far as it has been seen.
  function markActiveRead() {
    clearTimeout(state.timers.read);
    state.timers.read = null;
    const room = activeRoom();
    if (!room || !room.joined || !isViewing(room)) return;
    const seq = Math.min(room.maxSeq, seenUpTo(room));
    if (seq <= room.readSeq) return;
    if (request({ type: 'read', room: room.name, seq }, { kind: 'read', room: room.name }) === null) return;
    applyReadPosition(room, seq);
  }

  // How far the open room has been seen: all of it when its newest message
  // is in view; else up to the last message that has come into view. A
  // reader scrolled up into history has not read what arrives below, on
  // this device or any other (the read position is the user's).
  function seenUpTo(room) {
    if (isNearBottom()) return room.maxSeq;
    const bottom = dom.scroller.getBoundingClientRect().bottom;
    const shown = dom.messages.querySelectorAll('li.msg[data-seq]:not(.pending)');
    for (let i = shown.length - 1; i >= 0; i--) {
      if (shown[i].getBoundingClientRect().top < bottom) return Number(shown[i].dataset.seq);
    }
    return 0;
  }

  // ===== Room state: members, roles, topic =================================

  // A member or topic event after the joined frame: the topic, our role,
  // the member list and the bans follow it.
  function applyRoomEvent(room, e) {
    if (e.type === 'topic') {
      if (e.seq > room.topicSeq) { room.topicSeq = e.seq; room.topic = e.topic; }
    } else {
      if (sameUser(e.user, state.me) && e.seq > room.roleSeq) {
        room.roleSeq = e.seq;
        room.memberChangedAt = Date.now();
        if (e.change === 'added') { room.member = true; room.role = 'member'; room.ejection = null; }
        else if (e.change === 'role' && ROLES.includes(e.role)) room.role = e.role;
        else if (e.change === 'removed' || e.change === 'banned') {
          room.member = false;
          room.role = null;
          room.ejection = { from: e.from, change: e.change, reason: typeof e.reason === 'string' ? e.reason : '' };
        }
      }
      // Kicked, banned or parted: every connection of theirs is out of the
      // room, whether or not a presence push says so.
      if (e.change === 'removed' || e.change === 'banned') {
        for (const u of [...room.members]) if (sameUser(u, e.user)) { room.members.delete(u); room.typing.delete(u); }
      }
      applyToRoster(room, e);
      scheduleRoster(room);
    }
    if (room.name === state.active) { renderHeader(); renderMembers(); }
    scheduleSidebar();
  }

  // Shows a member event at once; the refetch that follows (scheduleRoster)
  // corrects whatever this guessed wrong.
  function applyToRoster(room, e) {
    const key = String(e.user).toLowerCase();
    if (room.roster) {
      if (e.change === 'added') room.roster.set(key, { user: e.user, role: 'member' });
      else if (e.change === 'removed' || e.change === 'banned') room.roster.delete(key);
      else if (e.change === 'role' && ROLES.includes(e.role)) {
        const m = room.roster.get(key);
        room.roster.set(key, { user: m ? m.user : e.user, role: e.role });
      }
    }
    if (room.bans) {
      room.bans = room.bans.filter((b) => !sameUser(b.user, e.user));
      if (e.change === 'banned') room.bans.push({ user: e.user, by: e.from, reason: e.reason || '' });
    }
  }

  // The member list (and, for owners and moderators, the bans) of the open
  // room, fetched again shortly after member events. Other rooms forget
  // theirs: they fetch it when opened.
  function scheduleRoster(room) {
    if (room.isDm) return;
    if (room.name !== state.active) { room.roster = null; room.bans = null; return; }
    clearTimeout(room.rosterTimer);
    room.rosterTimer = setTimeout(() => { room.rosterTimer = null; fetchRoster(room); }, ROSTER_DELAY_MS);
  }

  // One request at a time per room; a change during one fetches again after
  // it, so the list ends up newer than every event that asked for it.
  async function fetchRoster(room) {
    if (room.isDm || !state.token) return;
    if (room.rosterLoading) { room.rosterDirty = true; return; }
    room.rosterLoading = true;
    room.rosterDirty = false;
    const token = state.token;
    const path = roomPath(room.name);
    const res = await api('GET', `${path}/members`);
    let bans = null;
    if (res.ok && isModerator(myRole(room))) bans = await api('GET', `${path}/bans`);
    room.rosterLoading = false;
    if (token !== state.token || state.rooms.get(room.name) !== room) return;
    if (res.status === 401 || (bans && bans.status === 401)) { sessionExpired(); return; }
    if (res.ok && res.data && Array.isArray(res.data.members)) {
      room.roster = new Map();
      for (const m of res.data.members) {
        if (m && typeof m.user === 'string' && ROLES.includes(m.role)) room.roster.set(m.user.toLowerCase(), { user: m.user, role: m.role });
      }
    }
    if (bans && bans.ok && bans.data && Array.isArray(bans.data.bans)) {
      room.bans = bans.data.bans.filter((b) => b && typeof b.user === 'string').map((b) => ({
        user: b.user, by: typeof b.by === 'string' ? b.by : '', reason: typeof b.reason === 'string' ? b.reason : '',
      }));
    } else if (!isModerator(myRole(room))) room.bans = null;
    if (room.rosterDirty) { fetchRoster(room); return; }
    if (room.name === state.active) renderMembers();
  }

  // What the server's room list says about a room we hold. Our membership
  // and role from a list asked for before we last learnt them stay ours;
  // the topic of a room we are joined to follows its events instead.
  function applyListedRoom(room, info, askedAt) {
    if (room.memberChangedAt < askedAt) {
      room.member = info.member === true && !room.isDm;
      if (!room.joined) room.role = ROLES.includes(info.role) ? info.role : null;
    }
    if (!room.joined) {
      room.topic = typeof info.topic === 'string' ? info.topic : '';
      room.private = info.private === true;
    }
  }

  // ===== DOM helpers ======================================================

  const $ = (id) => document.getElementById(id);
  const dom = {};
  ['auth-view', 'chat-view', 'login-form', 'username', 'password', 'login-btn', 'register-btn',
    'auth-error', 'conn-state', 'me-name', 'logout-btn', 'sidebar-toggle', 'sidebar', 'room-form',
    'room-input', 'room-join-btn', 'room-error', 'room-list', 'dm-form', 'dm-input', 'dm-start-btn',
    'dm-error', 'dm-list', 'room-title', 'room-meta', 'members-toggle', 'leave-btn', 'scroller',
    'load-older-btn', 'history-note', 'messages', 'empty-state', 'new-messages-btn', 'typing',
    'composer-form', 'composer-input', 'send-btn', 'composer-error', 'members-panel', 'members', 'toasts',
    'reply-bar', 'reply-text', 'reply-cancel', 'search-form', 'search-input', 'search-here', 'search-error',
    'search-status', 'search-results', 'search-more-btn',
    'create-room', 'create-form', 'create-name', 'create-topic', 'create-private', 'create-error', 'create-btn',
    'browse-rooms', 'browse-summary', 'browse-empty', 'browse-list', 'room-private', 'room-topic', 'topic-edit-btn',
    'topic-form', 'topic-input', 'topic-cancel-btn', 'topic-error', 'part-btn', 'part-confirm', 'part-confirm-text',
    'part-confirm-btn', 'part-cancel-btn', 'members-error', 'mod-tools', 'invite-form', 'invite-input', 'ban-form',
    'ban-user', 'ban-reason', 'bans-empty', 'bans',
  ].forEach((id) => { dom[id.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = $(id); });

  // Enter submits; Shift+Enter is a newline; never submit mid IME composition.
  function isSubmitKey(ev) {
    return ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229;
  }

  // Rows for a growing textarea (rows, not an inline style: CSP), up to 6.
  function textRows(text) { return Math.min(6, Math.max(1, text.split('\n').length)); }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // Append `text` to `parent`, turning http(s) URLs into links. Text goes in
  // through text nodes only, so the element's textContent equals `text`.
  const URL_RE = /\bhttps?:\/\/[^\s<>"']+/g;
  function appendLinkified(parent, text) {
    let last = 0;
    for (const match of text.matchAll(URL_RE)) {
      let url = match[0].replace(/[).,!?;:\]]+$/, ''); // trailing punctuation is prose
      const start = match.index;
      let ok = false;
      try { ok = ['http:', 'https:'].includes(new URL(url).protocol); } catch (e) { ok = false; }
      if (!ok || !url) continue;
      parent.appendChild(document.createTextNode(text.slice(last, start)));
      const a = el('a', null, url);
      a.href = url;
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow';
      parent.appendChild(a);
      last = start + url.length;
    }
    parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function isNearBottom() {
    const s = dom.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < EDGE_PX;
  }
  function scrollToBottom() { dom.scroller.scrollTop = dom.scroller.scrollHeight; }
  function isNarrow() { return window.matchMedia('(max-width: 699px)').matches; }

  // Non-blocking notices. Repeats of the same key refresh one toast instead of
  // stacking (a burst of rate_limited errors shows one "slow down").
  const toastsByKey = new Map();
  function toast(text, opts) {
    const o = opts || {};
    const key = o.key || text;
    let t = toastsByKey.get(key);
    if (!t) {
      const node = el('div', 'toast');
      node.dataset.kind = o.kind || 'error';
      if (o.code) node.dataset.code = o.code;
      const body = el('span', 'toast-text');
      const close = el('button', 'toast-close', '×');
      close.type = 'button';
      close.setAttribute('aria-label', 'Dismiss notification');
      close.addEventListener('click', () => dismiss());
      node.append(body, close);
      dom.toasts.appendChild(node);
      t = { node, body, timer: null };
      toastsByKey.set(key, t);
      const dismiss = () => { clearTimeout(t.timer); node.remove(); toastsByKey.delete(key); };
      t.dismiss = dismiss;
    }
    t.body.textContent = o.detail ? `${text} ${o.detail}` : text;
    clearTimeout(t.timer);
    t.timer = setTimeout(t.dismiss, o.ttl || 6000);
  }
  function dismissAllToasts() { for (const t of [...toastsByKey.values()]) t.dismiss(); }

  // ===== HTTP ===============================================================

  // Returns { ok, status, data } or { ok:false, status, code, message };
  // status 0 means the request never reached the server.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'same-origin',
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      return { ok: false, status: 0, code: 'network', message: '' };
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.ok) return { ok: true, status: resp.status, data };
    const err = (data && data.error) || {};
    return { ok: false, status: resp.status, code: err.code || '', message: err.message || '' };
  }

  function roomPath(name) { return `/api/rooms/${encodeURIComponent(name)}`; }

  // A failed REST call as a sentence for the user: the server's own words
  // when it gave some (they say which rule refused it).
  function restProblem(res) {
    if (res.status === 0) return 'Cannot reach the server. Try again.';
    return res.message || errorText(res.code);
  }

  function authErrorText(kind, res, username) {
    if (res.status === 0) return 'Cannot reach the server. Check your connection and try again.';
    if (res.status === 401 || res.code === 'unauthorized') return 'Wrong username or password.';
    if (res.status === 409 || res.code === 'conflict') return `The name "${username}" is already taken. Choose another or log in.`;
    if (res.status === 400 || res.code === 'bad_request') {
      return res.message ? `Invalid username or password: ${res.message}` : 'Invalid username or password format.';
    }
    if (res.status === 404 && kind === 'login') return 'Wrong username or password.';
    if (res.status === 429 || res.code === 'rate_limited') return 'Too many attempts. Wait a moment and try again.';
    return `The server could not ${kind === 'login' ? 'log you in' : 'create the account'} (HTTP ${res.status}). Try again.`;
  }

  let roomsFetchInFlight = false;
  async function refreshRooms() {
    if (!state.token || roomsFetchInFlight || document.hidden) return;
    roomsFetchInFlight = true;
    const token = state.token;
    const askedAt = Date.now();
    const res = await api('GET', '/api/rooms');
    roomsFetchInFlight = false;
    if (token !== state.token) return; // logged out meanwhile
    if (!res.ok) {
      if (res.status === 401) sessionExpired();
      return; // other failures: keep the old list, the status pill tells the story
    }
    if (!Array.isArray(res.data)) return;
    state.roomList = res.data.filter((r) => r && typeof r.room === 'string');
    const listed = new Set();
    for (const r of state.roomList) {
      // Only DMs we are part of. Our rooms (member: true) are "my rooms" on
      // every device; the others are only offered under "Browse rooms".
      if (isDmRoom(r.room) && dmPeer(r.room, state.me) === null) continue;
      listed.add(r.room);
      if (!state.rooms.has(r.room) && !isDmRoom(r.room) && r.member !== true) continue;
      const room = getRoom(r.room);
      if (Number.isFinite(r.members_online)) room.membersOnline = r.members_online;
      applyListedRoom(room, r, askedAt);
      applyRoomInfo(room, r);
    }
    // A private room we were taken out of is no longer listed at all.
    for (const room of state.rooms.values()) {
      if (!room.isDm && !listed.has(room.name) && room.memberChangedAt < askedAt) room.member = false;
    }
    scheduleSidebar();
  }

  // Read state from the room list: a joined room's counts follow its live
  // stream (the list may be older than it), so only its read position is
  // taken; any other room takes the server's counts.
  function applyRoomInfo(room, info) {
    if (!Number.isSafeInteger(info.read_seq)) return; // never read there: nothing stored
    if (room.joined) applyReadPosition(room, info.read_seq);
    else setServerUnread(room, info.read_seq, info.unread, info.mentions, info.last_seq);
  }

  function refreshRoomsSoon() {
    clearTimeout(state.timers.roomsSoon);
    state.timers.roomsSoon = setTimeout(refreshRooms, 300);
  }

  // ===== Transport: WebSocket, reconnect, ping ==============================

  function wsUrl() { return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`; }

  function setConn(kind, detail) {
    dom.connState.dataset.state = kind;
    dom.connState.textContent = detail ? `${kind} ${detail}` : kind;
  }

  function connect() {
    clearTimeout(state.timers.reconnect);
    state.timers.reconnect = null;
    if (!state.token || state.ws || state.halted) return;
    if (state.attempt === 0) setConn('reconnecting', '(connecting…)');
    let ws;
    try { ws = new WebSocket(wsUrl()); } catch (e) { onSocketGone(0); return; }
    state.ws = ws;
    // Covers both a connect that hangs and a hello that is never answered.
    state.timers.welcome = setTimeout(() => dropSocket(ws), WELCOME_TIMEOUT_MS);
    ws.onopen = () => {
      if (ws !== state.ws) return;
      ws.send(JSON.stringify({ type: 'hello', token: state.token, client: CLIENT_NAME }));
    };
    ws.onmessage = (ev) => {
      if (ws !== state.ws || typeof ev.data !== 'string') return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame && typeof frame.type === 'string') handleFrame(frame);
    };
    ws.onclose = (ev) => { if (ws === state.ws) onSocketGone(ev.code); };
    ws.onerror = () => { /* a close event always follows; handled there */ };
  }

  // Give up on a socket that looks dead (no welcome, no pong). A half-open TCP
  // connection may take minutes to report close, so we detach it and move on.
  function dropSocket(ws) {
    if (ws !== state.ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(4000, 'client timeout'); } catch (e) { /* already closing */ }
    onSocketGone(0);
  }

  function stopSocketTimers() {
    clearTimeout(state.timers.welcome);
    clearInterval(state.timers.ping);
    clearTimeout(state.timers.pong);
    state.timers.welcome = state.timers.ping = state.timers.pong = null;
  }

  function onSocketGone(code) {
    stopSocketTimers();
    state.ws = null;
    state.connected = false;
    // An edit, delete or reaction whose answer the socket took with it may
    // or may not be stored: it goes again after the reconnect with the same
    // nonce, which the server answers with the stored event if it was.
    for (const ctx of state.pending.values()) if (ctx.frame) state.unconfirmed.push(ctx);
    state.pending.clear();
    for (const room of state.rooms.values()) {
      room.joined = room.joinPending = room.filling = room.loadingOlder = false;
      room.typing.clear();
      clearTimeout(room.retryTimer);
      room.retryTimer = null;
    }
    // Unacked sends may or may not have been stored: resend with the same nonce.
    for (const e of state.outbox.values()) if (e.state === 'sent') e.state = 'queued';
    const action = closeAction(code);
    if (action === 'stop' && code === CLOSE_UNAUTHORIZED) { sessionExpired(); return; }
    if (!state.token) return;
    if (action === 'stop') halt(code);
    else scheduleReconnect(action, code);
    renderPending();
    renderTyping();
    renderHeader();
  }

  // The server refused something this client sent and would again: stay
  // disconnected (a reload fetches the current client) instead of looping.
  function halt(code) {
    state.halted = true;
    const reason = CLOSE_CODES[code].reason;
    setConn('offline', `(closed by the server: ${reason || code}; reload the page)`);
    toast('Disconnected by the server. Reload the page to reconnect.', { key: 'halted', detail: reason, ttl: 60000 });
  }

  function scheduleReconnect(action, code) {
    state.attempt += 1;
    let delay;
    if (action === 'reconnect_now') {
      // Drain or slow-consumer close: the server wants us back now, resuming
      // with `since`. A little jitter spreads a drained node's clients.
      delay = Math.random() * 500;
    } else {
      // Never sooner than the code's minimum (4429: 10 s, a flooder stays away).
      delay = Math.max(backoffDelay(state.attempt, Math.random), CLOSE_CODES[code]?.minDelayMs ?? 0);
    }
    if (navigator.onLine === false) setConn('offline', '(no network)');
    else setConn('reconnecting', `(attempt ${state.attempt})`);
    clearTimeout(state.timers.reconnect);
    state.timers.reconnect = setTimeout(connect, delay);
  }

  function sendFrame(frame) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // A frame expecting a reply (`re`). Ids are unique per tab so errors and
  // replies can always be matched to what caused them.
  function request(frame, ctx) {
    if (!state.connected) return null;
    const id = state.nextId++;
    state.pending.set(id, ctx);
    sendFrame(Object.assign({ type: frame.type, id }, frame));
    return id;
  }

  function startPing(heartbeatS) {
    let every = PING_EVERY_MS;
    if (Number.isFinite(heartbeatS) && heartbeatS > 0) every = Math.min(every, Math.max(5000, heartbeatS * 800));
    clearInterval(state.timers.ping);
    state.timers.ping = setInterval(() => {
      if (state.timers.pong) return; // still waiting for the last one
      const ws = state.ws;
      if (request({ type: 'ping' }, { kind: 'ping' }) === null) return;
      state.timers.pong = setTimeout(() => { state.timers.pong = null; dropSocket(ws); }, PONG_TIMEOUT_MS);
    }, every);
  }

  // ===== Protocol handlers =================================================

  function handleFrame(f) {
    const ctx = f.re != null ? state.pending.get(f.re) : undefined;
    if (f.re != null) state.pending.delete(f.re);
    switch (f.type) {
      case 'welcome': return onWelcome(f);
      case 'joined': return onJoined(f, ctx);
      case 'history': return onHistory(f, ctx);
      case 'message':
      case 'edited':
      case 'deleted':
      case 'reaction':
      case 'member':
      case 'topic': return onMessage(f);
      case 'ack': return onAck(f, ctx);
      case 'presence': return onPresence(f);
      case 'typing': return onTyping(f);
      case 'read': return onRead(f);
      case 'pong': clearTimeout(state.timers.pong); state.timers.pong = null; return undefined;
      case 'error': return onError(f, ctx);
      case 'left': return onLeft(f, ctx);
      default: return undefined; // unknown frame types: nothing to do
    }
  }

  function onWelcome(f) {
    clearTimeout(state.timers.welcome);
    state.timers.welcome = null;
    state.connected = true;
    state.attempt = 0;
    if (typeof f.user === 'string' && f.user) { state.me = f.user; dom.meName.textContent = f.user; }
    saveSession();
    setConn('connected');
    startPing(f.heartbeat_s);
    for (const room of state.rooms.values()) if (room.wanted) joinRoom(room);
    flushOutbox(); // DM sends go with `to` and need no join
    // Edits, deletes and reactions need no join either.
    for (const ctx of state.unconfirmed.splice(0)) request(ctx.frame, ctx);
    refreshRoomsSoon();
    renderHeader();
  }

  function onJoined(f, ctx) {
    const name = typeof f.room === 'string' ? f.room : ctx && ctx.room;
    if (!name) return;
    const room = getRoom(name);
    room.joinPending = false;
    if (!room.wanted) { // the user left while the join was in flight
      request({ type: 'leave', room: name }, { kind: 'leave', room: name });
      return;
    }
    room.joined = true;
    room.members = new Set(Array.isArray(f.members) ? f.members.filter((m) => typeof m === 'string') : []);
    const resumed = !!ctx && ctx.since != null;
    const lastSeq = Number.isSafeInteger(f.last_seq) ? f.last_seq : 0;
    // How the room stands now: only events after last_seq change it.
    room.topic = typeof f.topic === 'string' ? f.topic : '';
    room.private = f.private === true;
    room.role = ROLES.includes(f.role) ? f.role : null;
    if (!room.isDm && room.role) room.member = true;
    room.memberChangedAt = Date.now();
    room.ejection = null;
    room.stateSeq = room.topicSeq = room.roleSeq = lastSeq;
    // The first join of the open room (after a reload, say) is when it was
    // opened: what was unread then gets the divider. A resume does not move it.
    const opening = !resumed && room.name === state.active && room.dividerAfter === null;
    if (opening && f.unread > 0 && Number.isSafeInteger(f.read_seq)) room.dividerAfter = f.read_seq;
    // The server counted the room's unread messages up to last_seq.
    setServerUnread(room, f.read_seq, f.unread, f.mentions, lastSeq);
    const added = mergeInto(room, f.history);
    room.everJoined = true;
    if (resumed && takenOutWhileAway(room, added)) return;
    if (resumed) {
      // Catch up on everything missed while away, page by page, before
      // trusting the live stream to be gapless.
      const high = contiguousHigh(room.messages, ctx.since);
      if (f.more === true || high < lastSeq) fetchForward(room, high, 'catchup');
    }
    showAdded(room, added, 'bulk');
    flushOutbox();
    refreshRoomsSoon();
    if (room.name === state.active) {
      scheduleRoster(room);
      renderHeader();
      renderMembers();
      renderDivider(room);
      maybeFillViewport(room);
      scheduleRead();
      continueJump();
    }
    scheduleSidebar();
  }

  // A resumed join whose history says we were kicked, banned or parted
  // elsewhere while this connection was down: the join must not undo that
  // (a public room lets anyone join), so the room is dropped here as if the
  // `left` push had come.
  function takenOutWhileAway(room, added) {
    if (room.isDm) return false;
    const last = added.filter((e) => e.type === 'member' && sameUser(e.user, state.me)).pop();
    if (!last || (last.change !== 'removed' && last.change !== 'banned')) return false;
    room.ejection = { from: last.from, change: last.change, reason: typeof last.reason === 'string' ? last.reason : '' };
    request({ type: 'leave', room: room.name }, { kind: 'leave', room: room.name });
    let reason = 'kicked';
    if (last.change === 'banned') reason = 'banned';
    else if (sameUser(last.from, state.me)) reason = 'parted';
    removedFrom(room.name, reason);
    return true;
  }

  function fetchForward(room, after, purpose) {
    room.filling = true;
    const id = request({ type: 'history', room: room.name, after, limit: FORWARD_PAGE },
      { kind: 'history', room: room.name, purpose, after });
    if (id === null) room.filling = false;
  }

  function requestOlder(room, limit = OLDER_PAGE) {
    if (!room || !room.joined || room.loadingOlder || !canLoadOlder(room)) return;
    room.loadingOlder = true;
    request({ type: 'history', room: room.name, before: room.minSeq, limit },
      { kind: 'history', room: room.name, purpose: 'older' });
    updateHistoryStatus();
  }

  // Seqs start at 1 and are gapless, so "is there anything older" is arithmetic.
  function canLoadOlder(room) { return room.minSeq > 1 && !room.olderExhausted; }

  function onHistory(f, ctx) {
    if (!ctx || ctx.kind !== 'history') return;
    const room = getRoom(ctx.room);
    if (!room.wanted && !room.isDm) { room.loadingOlder = room.filling = false; return; } // left meanwhile
    const msgs = Array.isArray(f.messages) ? f.messages : [];
    if (ctx.purpose === 'older') {
      room.loadingOlder = false;
      const added = mergeInto(room, msgs);
      if (msgs.length === 0 || f.more === false) room.olderExhausted = true;
      showAdded(room, added, 'older');
      updateHistoryStatus();
      if (room.name === state.active) { maybeFillViewport(room); continueJump(); }
      return;
    }
    // Forward paging: resume catch-up or a gap fill. Continue while the server
    // says there is more or we still lack seqs below the newest one we hold;
    // stop if a page made no progress so a confused server cannot loop us.
    const added = mergeInto(room, msgs);
    const high = contiguousHigh(room.messages, ctx.after);
    if (high > ctx.after && (f.more === true || high < room.maxSeq)) fetchForward(room, high, ctx.purpose);
    else room.filling = false;
    showAdded(room, added, 'bulk');
  }

  function onMessage(f) {
    if (!isValidEvent(f) || typeof f.room !== 'string') return;
    if (isDmRoom(f.room) && dmPeer(f.room, state.me) === null) return; // not ours: ignore
    const known = state.rooms.get(f.room);
    if (!isDmRoom(f.room) && !(known && known.wanted)) {
      // A notice about us for a room we are not in (invited, given a role,
      // unbanned): the room list changed. Anything else: a late push for a
      // room we left.
      if (f.type === 'member' && sameUser(f.user, state.me)) refreshRoomsSoon();
      return;
    }
    const room = getRoom(f.room);
    // seq is gapless per room: a jump means the live stream lost something.
    if (room.joined && !room.filling && room.maxSeq > 0 && f.seq > room.maxSeq + 1) {
      fetchForward(room, room.maxSeq, 'gap');
    }
    const added = mergeInto(room, [f]);
    if (room.typing.delete(f.from) && room.name === state.active) renderTyping();
    showAdded(room, added, 'live');
  }

  function onAck(f, ctx) {
    const entry = ctx && ctx.kind === 'send' ? state.outbox.get(ctx.nonce) : null;
    const roomName = typeof f.room === 'string' ? f.room : entry && entry.room;
    if (entry) finishOutbox(entry);
    if (!entry || !roomName || !Number.isSafeInteger(f.seq)) return;
    // The server pushes our own message too, but the ack may come first (and a
    // DM sent with `to` may never be pushed back): show it from the ack.
    const room = getRoom(roomName);
    const added = mergeInto(room, [{
      type: 'message', room: roomName, seq: f.seq, from: state.me,
      text: entry.text, ts: f.ts, nonce: entry.nonce, reply_to: entry.replyTo || undefined,
    }]);
    showAdded(room, added, 'own');
  }

  // Our read position, as answered to our `read` or pushed because another
  // device of ours read: the badge follows it.
  function onRead(f) {
    if (typeof f.room !== 'string') return;
    const room = state.rooms.get(f.room);
    if (room) applyReadPosition(room, f.seq);
  }

  function onPresence(f) {
    const room = state.rooms.get(f.room);
    if (!room || typeof f.user !== 'string') return;
    if (f.state === 'joined') {
      room.members.add(f.user);
      // Joining a public room makes a member, with no event: list them.
      const key = f.user.toLowerCase();
      if (room.roster && !room.private && !room.roster.has(key)) room.roster.set(key, { user: f.user, role: 'member' });
    } else if (f.state === 'left') { room.members.delete(f.user); room.typing.delete(f.user); }
    if (room.name === state.active) { renderMembers(); renderHeader(); renderTyping(); }
  }

  // `left`: the answer to our leave (nothing to do) or part, or a push
  // saying why this connection is out of the room: kicked, banned, or
  // parted on another device.
  function onLeft(f, ctx) {
    const name = typeof f.room === 'string' ? f.room : ctx && ctx.room;
    if (!name) return;
    if (ctx && ctx.kind === 'part') removedFrom(name, 'parted');
    else if (f.re == null && typeof f.reason === 'string') removedFrom(name, f.reason);
  }

  function onTyping(f) {
    const room = state.rooms.get(f.room);
    if (!room || typeof f.user !== 'string' || f.user === state.me) return;
    room.typing.set(f.user, Date.now() + TYPING_SHOW_MS);
    if (room.name === state.active) renderTyping();
  }

  const ACTION_VERB = { edit: 'edit the message', delete: 'delete the message', react: 'change the reaction' };

  // What the user is told when a room is taken from them.
  function removalText(room, reason) {
    const label = roomLabel(room);
    const e = room.ejection;
    const by = e && !sameUser(e.from, state.me) ? ` by ${e.from}` : '';
    if (reason === 'parted') return `You left ${label}.`;
    if (reason === 'banned') return `You were banned from ${label}${by}${e && e.reason ? `: ${e.reason}` : ''}.`;
    if (reason === 'kicked') return `You were removed from ${label}${by}.`;
    return `You are no longer in ${label}.`;
  }

  function errorText(code) { return ERROR_TEXT[code] || 'Something went wrong.'; }
  function isRetryable(code) { return code === 'rate_limited' || code === 'unavailable' || code === 'internal'; }

  function onError(f, ctx) {
    const code = typeof f.code === 'string' ? f.code : 'internal';
    const detail = typeof f.message === 'string' ? f.message : '';
    if (code === 'unauthorized') { sessionExpired(); return; }
    const kind = ctx ? ctx.kind : null;
    if (kind === 'send') { onSendError(ctx.nonce, code, detail); return; }
    if (kind === 'join') {
      const room = getRoom(ctx.room);
      room.joinPending = false;
      if (isRetryable(code) && room.wanted) {
        toast(errorText(code), { code, key: code });
        room.retryTimer = setTimeout(() => { room.retryTimer = null; joinRoom(room); }, 2000 + Math.random() * 2000);
        return;
      }
      room.wanted = false;
      if (code === 'forbidden' && !room.isDm) { room.member = false; room.role = null; room.memberChangedAt = Date.now(); }
      if (room.isDm) {
        // Keep the conversation open without its history: sends fall back to
        // {"to": peer}, which needs no join. Only a refusal is worth a notice.
        if (code === 'forbidden') toast(`Cannot open ${roomLabel(room)}: ${errorText(code)}`, { code, detail });
        flushOutbox();
        renderHeader();
      } else {
        toast(`Cannot open ${roomLabel(room)}: ${errorText(code)}`, { code, detail });
        if (state.active === room.name) state.active = null;
        saveSession();
        renderConversation();
      }
      scheduleSidebar();
      return;
    }
    if (kind === 'history') {
      const room = getRoom(ctx.room);
      if (ctx.purpose === 'older') room.loadingOlder = false; else room.filling = false;
      updateHistoryStatus();
    }
    if (kind === 'edit' || kind === 'delete' || kind === 'react') {
      toast(`Could not ${ACTION_VERB[kind]}: ${errorText(code)}`, { code, detail });
      return;
    }
    if (kind === 'part') {
      // The last owner cannot leave (conflict): the server says what to do.
      toast(`Could not leave ${roomNameLabel(ctx.room)}: ${detail || errorText(code)}`, { code, key: `part-${ctx.room}` });
      return;
    }
    // A failed read receipt only leaves the badge to the next join; a ping
    // or leave error needs nothing.
    if (kind === 'ping' || kind === 'leave' || kind === 'read') return;
    toast(errorText(code), { code, key: code, detail: code === 'rate_limited' || code === 'unavailable' ? '' : detail });
  }

  // ===== Actions ============================================================

  function joinRoom(room) {
    if (!state.connected || room.joined || room.joinPending || room.retryTimer) return;
    const frame = { type: 'join', room: room.name };
    // Re-join after a reconnect: ask only for what we have not seen.
    if (room.everJoined && room.maxSeq > 0) frame.since = room.maxSeq;
    room.joinPending = true;
    request(frame, { kind: 'join', room: room.name, since: frame.since });
  }

  function openRoom(name) {
    if (state.timers.read) markActiveRead(); // the room we leave keeps what was read in it
    const room = getRoom(name);
    room.wanted = true;
    if (state.active !== name) {
      room.dividerAfter = room.unread > 0 ? room.readSeq : null;
      state.msgUi = null;
      state.jump = null;
      state.topicEdit = null;
      state.partConfirm = null;
      dom.membersError.textContent = '';
      if (state.replyTo && state.replyTo.room !== name) state.replyTo = null;
    }
    state.active = name;
    state.notice = null;
    if (room.joined && !room.roster) scheduleRoster(room);
    saveSession();
    joinRoom(room);
    renderConversation();
    scheduleSidebar();
    if (isNarrow()) setSidebarOpen(false);
    dom.composerInput.focus();
  }

  function leaveActive() {
    const room = activeRoom();
    if (!room) return;
    if (room.joined) request({ type: 'leave', room: room.name }, { kind: 'leave', room: room.name });
    room.wanted = room.joined = false;
    room.members.clear();
    room.typing.clear();
    const next = [...state.rooms.values()].find((r) => r.wanted && r !== room);
    state.active = next ? next.name : null;
    saveSession();
    flushOutbox(); // queued sends of a left room can no longer go out
    renderConversation();
    scheduleSidebar();
    (next ? dom.composerInput : dom.roomInput).focus();
  }

  // "Leave room": ends our membership (protocol 1.1 §3), after a
  // confirmation. The answer (`left`) drops the room like a kick does.
  function partRoom(name) {
    state.partConfirm = null;
    renderHeader();
    if (request({ type: 'part', room: name }, { kind: 'part', room: name }) !== null) return;
    toast(`Could not leave ${roomNameLabel(name)}: not connected. Try again once the connection is back.`, { key: 'not-connected' });
  }

  // We are out of `name` (kicked, banned, parted here or on another
  // device): its history goes from view, it leaves "my rooms" and the set
  // of rooms joined again on every reconnect, and the user is told why.
  function removedFrom(name, reason) {
    const room = state.rooms.get(name);
    if (!room || room.isDm) return;
    const text = removalText(room, reason);
    clearTimeout(room.retryTimer);
    clearTimeout(room.rosterTimer);
    Object.assign(room, {
      wanted: false, joined: false, joinPending: false, everJoined: false, member: false, role: null,
      retryTimer: null, rosterTimer: null, roster: null, bans: null, topic: '',
      messages: new Map(), minSeq: 0, maxSeq: 0, unread: 0, mentions: 0, dividerAfter: null,
      loadingOlder: false, olderExhausted: false, filling: false, memberChangedAt: Date.now(),
    });
    room.members.clear();
    room.typing.clear();
    // Until the next room list: a public room is one to browse again, a
    // private one is gone.
    state.roomList = state.roomList.flatMap((r) => {
      if (r.room !== name) return [r];
      return r.private ? [] : [Object.assign({}, r, { member: false, role: undefined })];
    });
    if (state.replyTo && state.replyTo.room === name) state.replyTo = null;
    if (state.msgUi && state.msgUi.room === name) state.msgUi = null;
    if (state.jump && state.jump.room === name) state.jump = null;
    if (state.topicEdit === name) state.topicEdit = null;
    if (state.partConfirm === name) state.partConfirm = null;
    if (state.active === name) {
      state.active = null;
      state.notice = text;
      renderConversation();
    }
    saveSession();
    flushOutbox(); // its queued sends can no longer go out
    scheduleSidebar();
    toast(text, { key: `removed-${name}`, kind: reason === 'parted' ? 'info' : 'error', ttl: 15000 });
  }

  function sendMessage(text) {
    const room = activeRoom();
    if (!room) return 'Open a room first.';
    const tooLong = validateMessageText(text);
    if (tooLong) return tooLong;
    const replyTo = state.replyTo && state.replyTo.room === room.name ? state.replyTo.seq : null;
    const entry = {
      nonce: makeNonce(), room: room.name, peer: room.isDm ? dmPeer(room.name, state.me) : null,
      text, replyTo, state: 'queued', error: null, retries: 0, retryTimer: null,
    };
    // Escaping (quotes, control characters) can push a legal text past the
    // frame limit, and the server would then close the whole socket (1009).
    const probe = { type: 'send', id: 1e15, room: room.name, to: entry.peer || undefined, text, nonce: entry.nonce, reply_to: replyTo || undefined };
    if (utf8Length(JSON.stringify(probe)) > MAX_FRAME_BYTES) {
      return 'Message too large to send: it has too many special characters. Shorten it.';
    }
    state.outbox.set(entry.nonce, entry);
    setReplyTo(null);
    flushOutbox();
    scrollToBottom();
    return null;
  }

  // Send every queued outbox entry that can go now. Room sends need the room
  // joined on this connection (protocol rule); DM sends use {"to": peer} when
  // the DM room is not joined, which needs no join at all.
  function flushOutbox() {
    if (state.connected) {
      for (const e of state.outbox.values()) {
        if (e.state !== 'queued' || e.retryTimer) continue;
        const room = getRoom(e.room);
        let frame = null;
        if (room.joined) frame = { type: 'send', room: e.room, text: e.text, nonce: e.nonce };
        else if (room.isDm && e.peer && !room.joinPending) frame = { type: 'send', to: e.peer, text: e.text, nonce: e.nonce };
        else if (!room.wanted && !room.isDm) { e.state = 'failed'; e.error = 'You left this room.'; continue; }
        if (!frame) continue; // waiting for the join reply
        if (e.replyTo) frame.reply_to = e.replyTo;
        request(frame, { kind: 'send', nonce: e.nonce });
        e.state = 'sent';
      }
    }
    renderPending();
  }

  function onSendError(nonce, code, detail) {
    const e = state.outbox.get(nonce);
    if (!e) return;
    if (code === 'rate_limited' || code === 'unavailable' || (code === 'internal' && e.retries < 5)) {
      // Not stored: try again later with the same nonce (idempotent either way).
      e.retries += 1;
      e.state = 'queued';
      const delay = Math.min(15000, 1000 * Math.pow(1.6, e.retries)) * (0.75 + Math.random() * 0.5);
      e.retryTimer = setTimeout(() => { e.retryTimer = null; flushOutbox(); }, delay);
      toast(errorText(code), { code, key: code });
    } else {
      e.state = 'failed';
      e.error = code === 'not_found' && e.peer ? `No user named "${e.peer}".` : errorText(code);
      toast(`Message not sent: ${e.error}`, { code, detail: code === 'not_found' ? '' : detail });
    }
    renderPending();
  }

  function resolveOutbox(nonce, roomName) {
    const e = state.outbox.get(nonce);
    if (e && e.room === roomName) finishOutbox(e);
  }
  function finishOutbox(e) {
    clearTimeout(e.retryTimer);
    state.outbox.delete(e.nonce);
    const node = dom.messages.querySelector(`.pending[data-nonce="${CSS.escape(e.nonce)}"]`);
    if (node) node.remove();
  }

  function maybeSendTyping() {
    const room = activeRoom();
    if (!room || !room.joined || !dom.composerInput.value.trim()) return;
    const now = Date.now();
    if (now - (state.lastTypingSent.get(room.name) || 0) < TYPING_SEND_EVERY_MS) return;
    state.lastTypingSent.set(room.name, now);
    sendFrame({ type: 'typing', room: room.name });
  }

  async function authSubmit(kind) {
    const username = dom.username.value.trim();
    const password = dom.password.value;
    const problem = validateUsername(username) || validatePassword(password);
    if (problem) { showAuthError(problem); return; }
    showAuthError('');
    dom.loginBtn.disabled = dom.registerBtn.disabled = true;
    const res = await api('POST', `/api/auth/${kind}`, { username, password });
    dom.loginBtn.disabled = dom.registerBtn.disabled = false;
    if (!res.ok) { showAuthError(authErrorText(kind, res, username)); return; }
    const data = res.data || {};
    if (typeof data.token !== 'string') { showAuthError('The server sent an unexpected reply. Try again.'); return; }
    dom.password.value = '';
    state.admin = Boolean(data.user && data.user.admin === true);
    startSession(data.token, (data.user && data.user.name) || username, null, []);
  }

  function startSession(token, user, active, wantedRooms) {
    state.token = token;
    state.me = user;
    for (const name of wantedRooms) getRoom(name).wanted = true;
    state.active = active && state.rooms.has(active) ? active : null;
    saveSession();
    showChat();
    connect();
    refreshRooms();
    clearInterval(state.timers.rooms);
    state.timers.rooms = setInterval(refreshRooms, ROOMS_REFRESH_MS);
  }

  function logout(message) {
    const ws = state.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'logout'); } catch (e) { /* ignore */ }
    }
    stopSocketTimers();
    for (const key of Object.keys(state.timers)) { clearTimeout(state.timers[key]); clearInterval(state.timers[key]); state.timers[key] = null; }
    for (const e of state.outbox.values()) clearTimeout(e.retryTimer);
    for (const r of state.rooms.values()) { clearTimeout(r.retryTimer); clearTimeout(r.rosterTimer); }
    Object.assign(state, {
      token: null, me: null, admin: false, ws: null, connected: false, halted: false, attempt: 0, active: null, roomList: [],
      msgUi: null, replyTo: null, jump: null, notice: null, topicEdit: null, partConfirm: null,
    });
    state.pending.clear();
    state.unconfirmed.length = 0;
    state.rooms.clear();
    state.outbox.clear();
    state.lastTypingSent.clear();
    for (const key of Object.values(STORE)) storageSet(key, null);
    setConn('offline');
    dismissAllToasts();
    showAuth(message || '');
  }

  function sessionExpired() { logout('Your session has expired. Please log in again.'); }

  // ===== Room management: create, topic, invite, roles, kick, ban ==============

  async function createRoom() {
    const name = dom.createName.value.trim().replace(/^#/, '');
    const topic = dom.createTopic.value.trim();
    let problem = validateRoomName(name);
    if (!problem && utf8Length(topic) > MAX_TOPIC_BYTES) problem = `Topics are at most ${MAX_TOPIC_BYTES} bytes long.`;
    dom.createError.textContent = problem || '';
    dom.createName.setAttribute('aria-invalid', String(!!problem));
    if (problem) return;
    const body = { room: name };
    if (topic) body.topic = topic;
    if (dom.createPrivate.checked) body.private = true;
    dom.createBtn.disabled = true;
    const res = await api('POST', '/api/rooms', body);
    dom.createBtn.disabled = false;
    if (!state.token) return;
    if (!res.ok) {
      if (res.status === 401) { sessionExpired(); return; }
      dom.createError.textContent = res.status === 409
        ? `A room named #${name} already exists: join it by its name above, or choose another.`
        : `Could not create #${name}: ${restProblem(res)}`;
      return;
    }
    const room = getRoom(name);
    Object.assign(room, {
      member: true, role: 'owner', topic, private: body.private === true, memberChangedAt: Date.now(),
    });
    dom.createForm.reset();
    dom.createRoom.open = false;
    openRoom(name);
    refreshRoomsSoon();
  }

  // A REST call that stores a room event (topic, invite, role, kick, ban,
  // unban): shown at once when it answers with the event (the push brings
  // it too; seq keeps one copy). Returns whether it worked; a refusal goes
  // to `errorEl`, in the server's words.
  async function roomChange(room, what, method, path, body, errorEl) {
    errorEl.textContent = '';
    const res = await api(method, roomPath(room.name) + path, body);
    if (!state.token) return false;
    if (!res.ok) {
      if (res.status === 401) { sessionExpired(); return false; }
      errorEl.textContent = `Could not ${what}: ${restProblem(res)}`;
      return false;
    }
    const e = res.data;
    if (room.joined && e && e.room === room.name && isValidEvent(e)) showAdded(room, mergeInto(room, [e]), 'live');
    scheduleRoster(room);
    return true;
  }

  function openTopicEditor() {
    const room = activeRoom();
    if (!room) return;
    state.topicEdit = room.name;
    dom.topicInput.value = room.topic;
    dom.topicError.textContent = '';
    renderHeader();
    dom.topicInput.focus();
    dom.topicInput.select();
  }

  function closeTopicEditor() {
    state.topicEdit = null;
    dom.topicError.textContent = '';
    renderHeader();
    dom.topicEditBtn.focus();
  }

  async function saveTopic() {
    const room = activeRoom();
    if (!room) return;
    const topic = dom.topicInput.value.trim();
    if (utf8Length(topic) > MAX_TOPIC_BYTES) { dom.topicError.textContent = `Topics are at most ${MAX_TOPIC_BYTES} bytes long.`; return; }
    if (topic === room.topic) { closeTopicEditor(); return; }
    if (await roomChange(room, 'set the topic', 'PATCH', '', { topic }, dom.topicError) && state.topicEdit === room.name) closeTopicEditor();
  }

  async function inviteMember() {
    const room = activeRoom();
    const user = dom.inviteInput.value.trim().replace(/^@/, '');
    const problem = validateUsername(user);
    if (problem || !room) { dom.membersError.textContent = problem || ''; return; }
    if (await roomChange(room, `add ${user}`, 'POST', '/members', { user }, dom.membersError)) dom.inviteInput.value = '';
  }

  function setMemberRole(room, user, role) {
    roomChange(room, `make ${user} ${role}`, 'PUT', `/members/${encodeURIComponent(user)}`, { role }, dom.membersError);
  }

  function kickMember(room, user) {
    roomChange(room, `remove ${user}`, 'DELETE', `/members/${encodeURIComponent(user)}`, undefined, dom.membersError);
  }

  // "Ban" on a member's row fills in the ban form: the reason is optional.
  function prepareBan(user) {
    dom.banUser.value = user;
    dom.banReason.focus();
  }

  async function banUser() {
    const room = activeRoom();
    const user = dom.banUser.value.trim().replace(/^@/, '');
    const reason = dom.banReason.value.trim();
    let problem = validateUsername(user);
    if (!problem && utf8Length(reason) > MAX_REASON_BYTES) problem = `Reasons are at most ${MAX_REASON_BYTES} bytes long.`;
    if (problem || !room) { dom.membersError.textContent = problem || ''; return; }
    const body = { user };
    if (reason) body.reason = reason;
    if (await roomChange(room, `ban ${user}`, 'POST', '/bans', body, dom.membersError)) dom.banForm.reset();
  }

  function unbanUser(room, user) {
    roomChange(room, `unban ${user}`, 'DELETE', `/bans/${encodeURIComponent(user)}`, undefined, dom.membersError);
  }

  // ===== Message actions: edit, delete, react, reply, jump ====================

  function heldMessage(roomName, seq) {
    const room = state.rooms.get(roomName);
    const m = room ? room.messages.get(seq) : null;
    return m && isMessage(m) ? m : null;
  }

  // An edit, delete or react request. Each carries a fresh nonce: the server
  // then stores it at most once, whatever happens to its ack. The change
  // shows when its event is pushed back, like everyone else's.
  function messageRequest(kind, roomName, seq, fields) {
    const frame = Object.assign({ type: kind, room: roomName, target: seq, nonce: makeNonce() }, fields);
    if (request(frame, { kind, room: roomName, seq, frame }) !== null) return true;
    toast(`Could not ${ACTION_VERB[kind]}: not connected. Try again once the connection is back.`, { key: 'not-connected' });
    return false;
  }

  // At most one message has an open panel (editor, reaction picker or
  // delete confirmation); opening another closes the first.
  function openPanel(roomName, seq, mode) {
    const m = heldMessage(roomName, seq);
    if (!m || m.deleted) return;
    const prev = state.msgUi;
    state.msgUi = { room: roomName, seq, mode, draft: m.text };
    if (prev && (prev.room !== roomName || prev.seq !== seq)) rerenderMessage(prev.room, prev.seq);
    const li = rerenderMessage(roomName, seq);
    const first = li && li.querySelector('.msg-panel textarea, .msg-panel button');
    if (first) first.focus();
  }

  // Closes the open panel; `refocus` puts the keyboard back on its message row.
  function closePanel(refocus) {
    const ui = state.msgUi;
    if (!ui) return;
    state.msgUi = null;
    const li = rerenderMessage(ui.room, ui.seq);
    if (li && refocus) li.focus();
  }

  function submitEdit() {
    const ui = state.msgUi;
    const m = ui && heldMessage(ui.room, ui.seq);
    if (!m) return;
    const text = ui.draft;
    const problem = text.trim() ? validateMessageText(text) : 'A message cannot be empty: delete it instead.';
    if (problem) { toast(problem, { key: 'edit-invalid' }); return; }
    if (text === m.text || messageRequest('edit', ui.room, ui.seq, { text })) closePanel(true);
  }

  function confirmDelete() {
    const ui = state.msgUi;
    if (ui && messageRequest('delete', ui.room, ui.seq, {})) closePanel(true);
  }

  // Adds our reaction, or takes it back if it is already there.
  function toggleReaction(roomName, seq, emoji) {
    const m = heldMessage(roomName, seq);
    if (!m || m.deleted) return;
    const users = m.reactions && Array.isArray(m.reactions[emoji]) ? m.reactions[emoji] : [];
    messageRequest('react', roomName, seq, { emoji, on: !users.some((u) => sameUser(u, state.me)) });
  }

  function setReplyTo(target) {
    state.replyTo = target;
    renderReplyBar();
  }

  function startReply(roomName, seq) {
    setReplyTo({ room: roomName, seq });
    dom.composerInput.focus();
  }

  function jumpTo(roomName, seq) {
    state.jump = { room: roomName, seq };
    continueJump();
  }

  // Moves a pending jump along: once the message is shown, scroll to it;
  // else page older history back to it (in one page when the server allows).
  // onJoined and onHistory call this again when what it waits for arrives.
  function continueJump() {
    const j = state.jump;
    if (!j || j.room !== state.active) return;
    const room = activeRoom();
    const li = dom.messages.querySelector(`li.msg[data-seq="${j.seq}"]:not(.pending)`);
    if (li) { state.jump = null; highlightMessage(li); return; }
    if (!room.joined || room.loadingOlder) return;
    if (canLoadOlder(room) && j.seq < room.minSeq) {
      requestOlder(room, Math.min(HISTORY_MAX, room.minSeq - j.seq + JUMP_CONTEXT));
      return;
    }
    state.jump = null;
    toast('That message is not in the loaded history (it may have been deleted).', { key: 'jump', kind: 'info' });
  }

  function highlightMessage(li) {
    for (const other of dom.messages.querySelectorAll('li.highlight')) other.classList.remove('highlight');
    li.classList.add('highlight');
    li.scrollIntoView({ block: 'center' });
    li.focus({ preventScroll: true });
    const seq = li.dataset.seq;
    setTimeout(() => {
      // The row may have been re-rendered meanwhile: look it up again.
      const now = dom.messages.querySelector(`li.msg[data-seq="${seq}"]`);
      if (now) now.classList.remove('highlight');
    }, HIGHLIGHT_MS);
  }

  // ===== Search ================================================================

  function isSearchHit(h) {
    return h && typeof h.room === 'string' && Number.isSafeInteger(h.seq) && h.seq > 0
      && typeof h.from === 'string' && typeof h.text === 'string';
  }

  function searchProblem(q) {
    if (!q) return 'Enter words to search for.';
    if (utf8Length(q) > MAX_QUERY_BYTES) return `Search for at most ${MAX_QUERY_BYTES} bytes of text.`;
    return null;
  }

  // A new search (more = false) or its next page. Answers of a search the
  // user has since replaced are dropped (`generation`).
  async function runSearch(more) {
    const s = state.search;
    if (!more) {
      const q = dom.searchInput.value.trim();
      const problem = searchProblem(q);
      dom.searchError.textContent = problem || '';
      dom.searchInput.setAttribute('aria-invalid', String(!!problem));
      if (problem) return;
      Object.assign(s, { q, room: dom.searchHere.checked ? state.active : null, next: null });
      dom.searchResults.textContent = '';
    }
    const params = new URLSearchParams({ q: s.q, limit: String(SEARCH_PAGE) });
    if (s.room) params.set('room', s.room);
    if (more && s.next != null) params.set('before', String(s.next));
    const generation = ++s.generation;
    dom.searchStatus.textContent = 'Searching…';
    dom.searchMoreBtn.hidden = true;
    const res = await api('GET', `/api/search?${params}`);
    if (generation !== s.generation || !state.token) return;
    if (!res.ok) {
      if (res.status === 401) { sessionExpired(); return; }
      dom.searchStatus.textContent = '';
      dom.searchError.textContent = res.status === 0
        ? 'Cannot reach the server. Try again.'
        : `Search failed: ${res.message || errorText(res.code)}`;
      return;
    }
    const data = res.data || {};
    for (const hit of (Array.isArray(data.results) ? data.results : []).filter(isSearchHit)) {
      dom.searchResults.appendChild(searchHitEl(hit));
    }
    s.next = data.next == null ? null : data.next;
    const n = dom.searchResults.children.length;
    dom.searchStatus.textContent = n === 0 ? 'No messages found.' : `${n} message${n === 1 ? '' : 's'} found.`;
    dom.searchMoreBtn.hidden = s.next == null;
  }

  function clearSearch() {
    Object.assign(state.search, { q: '', room: null, next: null, generation: state.search.generation + 1 });
    dom.searchInput.value = '';
    dom.searchResults.textContent = '';
    dom.searchStatus.textContent = '';
    dom.searchError.textContent = '';
    dom.searchMoreBtn.hidden = true;
  }

  // ===== Rendering ===========================================================

  function showAuth(message) {
    dom.chatView.hidden = true;
    dom.authView.hidden = false;
    dom.logoutBtn.hidden = true;
    dom.sidebarToggle.hidden = true;
    dom.meName.textContent = '';
    document.title = 'Parley';
    dom.messages.textContent = '';
    dom.roomList.textContent = '';
    dom.dmList.textContent = '';
    dom.browseList.textContent = '';
    dom.members.textContent = '';
    dom.bans.textContent = '';
    dom.createForm.reset();
    dom.createError.textContent = '';
    dom.membersError.textContent = '';
    clearSearch();
    renderReplyBar();
    showAuthError(message);
    dom.username.focus();
  }

  function showAuthError(text) { dom.authError.textContent = text; }

  function showChat() {
    dom.authView.hidden = true;
    dom.chatView.hidden = false;
    dom.logoutBtn.hidden = false;
    dom.sidebarToggle.hidden = false;
    dom.meName.textContent = state.me || '';
    renderConversation();
    scheduleSidebar();
    (state.active ? dom.composerInput : dom.roomInput).focus();
  }

  // Keyed list update: reuse the <li> of each key, move only what moved. A
  // full rebuild every 10 s would steal keyboard focus from the list.
  function reconcile(listEl, items, keyOf, build, update) {
    const existing = new Map();
    for (const child of listEl.children) existing.set(child.dataset.key, child);
    items.forEach((item, i) => {
      const key = keyOf(item);
      let node = existing.get(key);
      if (node) existing.delete(key);
      else { node = build(item); node.dataset.key = key; }
      update(node, item);
      if (listEl.children[i] !== node) listEl.insertBefore(node, listEl.children[i] || null);
    });
    for (const stale of existing.values()) stale.remove();
  }

  function buildNavItem() {
    const li = el('li', 'nav-item');
    const btn = el('button', 'nav-btn');
    btn.type = 'button';
    btn.append(el('span', 'nav-name'), el('span', 'nav-meta'), el('span', 'badge mention-badge'), el('span', 'badge'));
    btn.addEventListener('click', () => openRoom(btn.dataset.room));
    li.appendChild(btn);
    return li;
  }

  function buildBrowseItem() {
    const li = el('li', 'nav-item');
    const btn = el('button', 'nav-btn browse-btn');
    btn.type = 'button';
    btn.append(el('span', 'nav-name'), el('span', 'nav-meta'));
    btn.addEventListener('click', () => openRoom(btn.dataset.room));
    li.appendChild(btn);
    return li;
  }

  function updateBrowseItem(li, info) {
    const btn = li.firstElementChild;
    const [nameEl, metaEl] = btn.children;
    btn.dataset.room = info.room;
    nameEl.textContent = '#' + info.room;
    const online = Number.isFinite(info.members_online) ? `${info.members_online} online` : '';
    metaEl.textContent = [info.private ? 'private' : '', online].filter(Boolean).join(' · ');
    const topic = typeof info.topic === 'string' ? info.topic : '';
    btn.title = topic;
    btn.setAttribute('aria-label', `Join #${info.room}${topic ? `: ${topic}` : ''}${metaEl.textContent ? `, ${metaEl.textContent}` : ''}`);
  }

  function updateNavItem(li, room, label, meta) {
    const btn = li.firstElementChild;
    const [nameEl, metaEl, mentionEl, badgeEl] = btn.children;
    btn.dataset.room = room.name;
    btn.dataset.unread = String(room.unread);
    btn.dataset.mentions = String(room.mentions);
    nameEl.textContent = label;
    metaEl.textContent = meta;
    mentionEl.textContent = room.mentions > 0 ? `@${countText(room.mentions)}` : '';
    badgeEl.textContent = room.unread > 0 ? countText(room.unread) : '';
    li.classList.toggle('unread', room.unread > 0);
    li.classList.toggle('active', room.name === state.active);
    li.classList.toggle('joined', room.wanted);
    if (room.name === state.active) btn.setAttribute('aria-current', 'true'); else btn.removeAttribute('aria-current');
    const unread = room.unread > 0 ? `, ${countText(room.unread)} unread` : '';
    const mentions = room.mentions > 0 ? `, ${countText(room.mentions)} mentioning you` : '';
    btn.setAttribute('aria-label', label + unread + mentions + (meta ? `, ${meta}` : ''));
  }

  function scheduleSidebar() {
    if (state.timers.sidebar) return;
    state.timers.sidebar = setTimeout(() => { state.timers.sidebar = null; renderSidebar(); }, 30);
  }

  // "My rooms" (member of, or open here), DMs, and the public rooms to
  // browse: every room of the list we are not in.
  function renderSidebar() {
    if (!state.token) return;
    const listed = new Set(state.roomList.map((r) => r.room));
    const rooms = [];
    const dms = [];
    for (const r of state.rooms.values()) {
      if (!r.isDm) { if (r.member || r.wanted) rooms.push(r); continue; }
      if (dmPeer(r.name, state.me) !== null && (listed.has(r.name) || r.wanted || r.messages.size > 0 || r.unread > 0)) dms.push(r);
    }
    rooms.sort((a, b) => (b.wanted - a.wanted) || a.name.localeCompare(b.name));
    dms.sort((a, b) => (b.lastActivity - a.lastActivity) || a.name.localeCompare(b.name));
    const mine = new Set(rooms.map((r) => r.name));
    const browse = state.roomList.filter((r) => !isDmRoom(r.room) && r.member !== true && !mine.has(r.room))
      .sort((a, b) => a.room.localeCompare(b.room));

    reconcile(dom.roomList, rooms, (r) => r.name, buildNavItem, (li, r) => {
      const meta = [r.private ? 'private' : '', r.membersOnline != null ? `${r.membersOnline} online` : ''].filter(Boolean).join(' · ');
      updateNavItem(li, r, '#' + r.name, meta);
      li.classList.toggle('private', r.private);
    });
    reconcile(dom.browseList, browse, (r) => r.room, buildBrowseItem, updateBrowseItem);
    dom.browseSummary.textContent = browse.length > 0 ? `Browse rooms (${browse.length})` : 'Browse rooms';
    dom.browseEmpty.hidden = browse.length > 0;
    reconcile(dom.dmList, dms, (r) => r.name, buildNavItem, (li, r) => {
      const peer = dmPeer(r.name, state.me);
      updateNavItem(li, r, peer, '');
      li.firstElementChild.dataset.user = peer;
    });
    if (rooms.length === 0) dom.roomList.dataset.empty = 'true'; else delete dom.roomList.dataset.empty;
    updateTitle();
  }

  function updateTitle() {
    let unread = 0;
    for (const r of state.rooms.values()) unread += r.unread;
    document.title = unread > 0 ? `(${unread}) Parley` : 'Parley';
  }

  // One line of the timeline: a message, or a member or topic event.
  function lineEl(m, roomName) { return isRoomEvent(m) ? roomEventEl(m) : messageEl(m, roomName); }

  function roomEventEl(e) {
    const li = el('li', 'room-event');
    li.dataset.seq = String(e.seq);
    li.dataset.type = e.type;
    if (e.type === 'member') { li.dataset.change = e.change; li.dataset.user = e.user; }
    li.dataset.from = e.from;
    li.appendChild(el('span', 'event-text', roomEventText(e)));
    const date = new Date(e.ts);
    if (!Number.isNaN(date.getTime())) {
      const time = el('time', 'ts', formatTime(date, new Date()));
      time.dateTime = date.toISOString();
      time.title = date.toLocaleString();
      li.appendChild(time);
    }
    if (e.type === 'member' && e.change === 'role') li.title = `by ${e.from}`;
    return li;
  }

  function messageEl(m, roomName) {
    const own = sameUser(m.from, state.me);
    const li = el('li', 'msg');
    if (own) li.classList.add('own');
    if (!own && !m.deleted && mentionsUser(m.text, state.me)) li.classList.add('mention');
    li.tabIndex = 0; // a focusable row shows its actions (:focus-within) to keyboard users
    li.dataset.seq = String(m.seq);
    li.dataset.room = roomName;
    li.dataset.from = m.from;
    const meta = el('div', 'meta');
    meta.appendChild(el('span', 'from', m.from));
    const date = new Date(m.ts);
    if (!Number.isNaN(date.getTime())) {
      const time = el('time', 'ts', formatTime(date, new Date()));
      time.dateTime = date.toISOString();
      time.title = date.toLocaleString();
      meta.appendChild(time);
    }
    if (m.edited && !m.deleted) meta.appendChild(el('span', 'edited', '(edited)'));
    li.appendChild(meta);
    if (Number.isSafeInteger(m.reply_to)) {
      li.dataset.replyTo = String(m.reply_to);
      li.appendChild(replyQuote(m.reply_to, roomName));
    }
    const text = el('div', m.deleted ? 'text deleted' : 'text');
    if (m.deleted) text.textContent = 'message deleted';
    else appendLinkified(text, m.text);
    li.appendChild(text);
    const ui = state.msgUi;
    const panel = ui && !m.deleted && ui.room === roomName && ui.seq === m.seq ? ui.mode : null;
    if (panel === 'edit') { text.hidden = true; li.appendChild(editorEl(ui)); }
    const reactions = m.reactions && typeof m.reactions === 'object' ? Object.entries(m.reactions) : [];
    if (reactions.length > 0 && !m.deleted) {
      const row = el('div', 'reactions');
      for (const [emoji, users] of reactions) {
        if (Array.isArray(users) && users.length > 0) row.appendChild(reactionChip(roomName, m.seq, emoji, users));
      }
      li.appendChild(row);
    }
    if (!m.deleted) li.appendChild(actionsEl(m, roomName, own));
    if (panel === 'react') li.appendChild(pickerEl(roomName, m.seq));
    if (panel === 'delete') li.appendChild(deleteConfirmEl());
    return li;
  }

  // A button whose keyboard focus survives a re-render of its message
  // (rerenderMessage finds it again by `focusKey`).
  function actionButton(className, text, label, focusKey, onClick) {
    const b = el('button', className, text);
    b.type = 'button';
    if (label) b.setAttribute('aria-label', label);
    b.dataset.focus = focusKey;
    b.addEventListener('click', onClick);
    return b;
  }

  function reactionChip(roomName, seq, emoji, users) {
    const mine = users.some((u) => sameUser(u, state.me));
    const who = users.join(', ');
    const chip = actionButton(mine ? 'reaction mine' : 'reaction', `${emoji} ${users.length}`,
      `${emoji} from ${who}; ${mine ? 'remove' : 'add'} yours`, `chip-${emoji}`,
      () => toggleReaction(roomName, seq, emoji));
    chip.title = who;
    chip.setAttribute('aria-pressed', String(mine));
    return chip;
  }

  // Shown on hover and while focus is in the row (CSS); the server enforces
  // who may edit and delete, this only spares the others a useless button.
  function actionsEl(m, roomName, own) {
    const bar = el('div', 'msg-actions');
    bar.setAttribute('role', 'group');
    bar.setAttribute('aria-label', 'Message actions');
    bar.append(
      actionButton('msg-action', 'React', `Add a reaction to ${m.from}'s message`, 'react', () => openPanel(roomName, m.seq, 'react')),
      actionButton('msg-action', 'Reply', `Reply to ${m.from}`, 'reply', () => startReply(roomName, m.seq)));
    if (own) {
      bar.append(
        actionButton('msg-action', 'Edit', 'Edit your message', 'edit', () => openPanel(roomName, m.seq, 'edit')),
        actionButton('msg-action', 'Delete', 'Delete your message', 'delete', () => openPanel(roomName, m.seq, 'delete')));
    }
    return bar;
  }

  // The container of an open panel: Escape closes it (and only it).
  function panelEl(className, label) {
    const box = el('div', `msg-panel ${className}`);
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', label);
    box.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Escape') return;
      ev.preventDefault();
      ev.stopPropagation();
      closePanel(true);
    });
    return box;
  }

  function editorEl(ui) {
    const box = panelEl('msg-editor', 'Edit message');
    const input = el('textarea', 'editor-input');
    input.value = ui.draft;
    input.rows = textRows(ui.draft);
    input.setAttribute('aria-label', 'Message text: Enter saves, Escape cancels');
    input.dataset.focus = 'editor';
    input.addEventListener('input', () => { ui.draft = input.value; input.rows = textRows(input.value); });
    input.addEventListener('keydown', (ev) => {
      if (isSubmitKey(ev)) { ev.preventDefault(); submitEdit(); }
    });
    const buttons = el('div', 'panel-buttons');
    buttons.append(
      actionButton('primary', 'Save', null, 'save', submitEdit),
      actionButton('', 'Cancel', 'Cancel editing', 'cancel', () => closePanel(true)));
    box.append(input, buttons);
    return box;
  }

  function pickerEl(roomName, seq) {
    const box = panelEl('reaction-picker', 'Pick a reaction');
    for (const emoji of REACTION_EMOJI) {
      box.appendChild(actionButton('pick', emoji, `React with ${emoji}`, `pick-${emoji}`, () => {
        toggleReaction(roomName, seq, emoji);
        closePanel(true);
      }));
    }
    box.appendChild(actionButton('pick', '✕', 'Close the reaction picker', 'pick-close', () => closePanel(true)));
    return box;
  }

  function deleteConfirmEl() {
    const box = panelEl('delete-confirm', 'Confirm delete');
    box.append(el('span', null, 'Delete this message for everyone?'),
      actionButton('danger', 'Delete', 'Yes, delete the message', 'confirm-delete', confirmDelete),
      actionButton('', 'Cancel', 'Keep the message', 'cancel', () => closePanel(true)));
    return box;
  }

  // The replies shown quoting message `seq` (it changed, or was just loaded).
  function rerenderReplies(roomName, seq) {
    for (const li of dom.messages.querySelectorAll(`li.msg[data-reply-to="${seq}"]:not(.pending)`)) {
      rerenderMessage(roomName, Number(li.dataset.seq));
    }
  }

  // Re-renders one shown message in place. Keyboard focus inside it moves to
  // the control with the same data-focus key (or the row), so an edit or a
  // reaction arriving from elsewhere does not throw the user out of the list.
  function rerenderMessage(roomName, seq) {
    if (roomName !== state.active) return null;
    const old = dom.messages.querySelector(`li.msg[data-seq="${seq}"]:not(.pending)`);
    const m = heldMessage(roomName, seq);
    if (!old || !m) return null;
    const focused = document.activeElement;
    const focusKey = old.contains(focused) ? (focused.dataset.focus || '') : null;
    const li = messageEl(m, roomName);
    if (old.classList.contains('highlight')) li.classList.add('highlight');
    old.replaceWith(li);
    if (focusKey !== null) {
      const again = focusKey ? li.querySelector(`[data-focus="${CSS.escape(focusKey)}"]`) : null;
      (again || li).focus({ preventScroll: true });
    }
    return li;
  }

  function messagePreview(m) { return m.deleted ? 'message deleted' : m.text.slice(0, 120); }

  // The quoted start of the message a reply answers (if we hold it); a
  // button that jumps to it, loading older history when needed.
  function replyQuote(seq, roomName) {
    const target = heldMessage(roomName, seq);
    const quote = el('button', 'reply-quote');
    quote.type = 'button';
    quote.textContent = target ? `↪ ${target.from}: ${messagePreview(target)}` : '↪ an earlier message';
    quote.setAttribute('aria-label', `Show the message this replies to${target ? `, by ${target.from}` : ''}`);
    quote.dataset.focus = 'quote';
    quote.addEventListener('click', () => jumpTo(roomName, seq));
    return quote;
  }

  // "New messages" goes before the first message of someone else after the
  // read position the room had when it was opened. Its data-seq lies between
  // its neighbours' so insertMessages keeps it in place.
  function renderDivider(room) {
    if (room.name !== state.active) return;
    const old = dom.messages.querySelector('.unread-divider');
    let first = null;
    if (room.dividerAfter !== null) {
      for (const li of dom.messages.querySelectorAll('li.msg[data-seq]:not(.pending)')) {
        if (Number(li.dataset.seq) > room.dividerAfter && !sameUser(li.dataset.from, state.me)) { first = li; break; }
      }
    }
    if (!first) { if (old) old.remove(); return; }
    if (old && old.nextElementSibling === first) return;
    const divider = old || el('li', 'unread-divider', 'New messages');
    divider.setAttribute('role', 'separator');
    divider.dataset.seq = String(Number(first.dataset.seq) - 0.5);
    first.before(divider);
  }

  // One search result: where and who, then the text; opens the room at it.
  function searchHitEl(hit) {
    const li = el('li', 'search-hit');
    const btn = el('button', 'search-hit-btn');
    btn.type = 'button';
    btn.dataset.room = hit.room;
    btn.dataset.seq = String(hit.seq);
    const date = new Date(hit.ts);
    const when = Number.isNaN(date.getTime()) ? '' : ` · ${formatTime(date, new Date())}`;
    btn.append(el('span', 'hit-meta', `${roomNameLabel(hit.room)} · ${hit.from}${when}`),
      el('span', 'hit-text', hit.text.slice(0, 200)));
    btn.addEventListener('click', () => {
      openRoom(hit.room);
      jumpTo(hit.room, hit.seq);
    });
    li.appendChild(btn);
    return li;
  }

  function renderReplyBar() {
    const r = state.replyTo;
    const m = r && r.room === state.active ? heldMessage(r.room, r.seq) : null;
    dom.replyBar.hidden = !m;
    dom.replyText.textContent = m ? `Replying to ${m.from}: ${messagePreview(m)}` : '';
  }

  function pendingEl(e) {
    const li = el('li', 'msg own pending');
    li.dataset.room = e.room;
    li.dataset.nonce = e.nonce;
    li.dataset.state = e.state === 'failed' ? 'failed' : 'pending';
    const meta = el('div', 'meta');
    meta.appendChild(el('span', 'from', state.me));
    let status;
    if (e.state === 'failed') status = `Not sent: ${e.error || 'error'}`;
    else if (!state.connected) status = 'Waiting for connection…';
    else if (e.retryTimer) status = 'Retrying soon…';
    else status = 'Sending…';
    meta.appendChild(el('span', 'status', status));
    li.appendChild(meta);
    if (e.replyTo) li.appendChild(replyQuote(e.replyTo, e.room));
    const text = el('div', 'text');
    appendLinkified(text, e.text);
    li.appendChild(text);
    if (e.state === 'failed') {
      const actions = el('div', 'pending-actions');
      const retry = el('button', 'link-btn', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', () => { e.state = 'queued'; e.error = null; e.retries = 0; flushOutbox(); });
      const discard = el('button', 'link-btn', 'Discard');
      discard.type = 'button';
      discard.addEventListener('click', () => { finishOutbox(e); dom.composerInput.focus(); });
      actions.append(retry, discard);
      li.appendChild(actions);
    }
    return li;
  }

  // Pending sends sit after all confirmed messages, in the order they were written.
  function renderPending() {
    for (const node of [...dom.messages.querySelectorAll('.pending')]) node.remove();
    const room = activeRoom();
    if (!room) return;
    for (const e of state.outbox.values()) if (e.room === room.name) dom.messages.appendChild(pendingEl(e));
    updateEmptyState();
  }

  // Place confirmed messages by seq. New messages nearly always go last (walk
  // from the end); an older page goes first in one fragment.
  function insertMessages(room, added) {
    const list = dom.messages;
    const first = list.firstElementChild;
    const firstSeq = first && !first.classList.contains('pending') ? Number(first.dataset.seq) : Infinity;
    if (added[added.length - 1].seq < firstSeq && first && firstSeq !== Infinity) {
      const frag = document.createDocumentFragment();
      for (const m of added) frag.appendChild(lineEl(m, room.name));
      list.insertBefore(frag, first);
      return;
    }
    for (const m of added) {
      let node = list.lastElementChild;
      while (node && (node.classList.contains('pending') || Number(node.dataset.seq) > m.seq)) node = node.previousElementSibling;
      list.insertBefore(lineEl(m, room.name), node ? node.nextSibling : list.firstChild);
    }
  }

  function showAdded(room, added, kind) {
    if (added.length > 0) scheduleSidebar();
    if (added.length === 0 || room.name !== state.active) return;
    const s = dom.scroller;
    if (kind === 'older') {
      // Keep what the user is reading in place while content grows above it.
      const fromBottom = s.scrollHeight - s.scrollTop;
      insertMessages(room, added);
      for (const m of added) rerenderReplies(room.name, m.seq); // they can quote it now
      s.scrollTop = s.scrollHeight - fromBottom;
    } else {
      const atBottom = isNearBottom();
      insertMessages(room, added);
      if (atBottom || kind === 'own') scrollToBottom();
      else if (added.some((m) => m.from !== state.me)) dom.newMessagesBtn.hidden = false;
    }
    renderDivider(room);
    updateHistoryStatus();
    updateEmptyState();
    scheduleRead();
  }

  // A short history that does not fill the pane leaves nothing to scroll, so
  // the "scroll up for more" trigger would never fire: load until it fills.
  function maybeFillViewport(room) {
    const s = dom.scroller;
    if (s.scrollHeight <= s.clientHeight + EDGE_PX) requestOlder(room);
  }

  function renderConversation() {
    const room = activeRoom();
    const list = dom.messages;
    list.setAttribute('aria-busy', 'true');
    list.textContent = '';
    if (room) {
      const frag = document.createDocumentFragment();
      for (const seq of [...room.messages.keys()].sort((a, b) => a - b)) {
        const m = room.messages.get(seq);
        if (isMessage(m) || isRoomEvent(m)) frag.appendChild(lineEl(m, room.name));
      }
      list.appendChild(frag);
    }
    renderPending();
    if (room) renderDivider(room);
    list.removeAttribute('aria-busy');
    dom.composerInput.disabled = dom.sendBtn.disabled = !room;
    dom.composerError.textContent = '';
    dom.newMessagesBtn.hidden = true;
    renderHeader();
    renderMembers();
    renderTyping();
    updateHistoryStatus();
    updateEmptyState();
    renderReplyBar();
    scrollToBottom();
    if (room && room.joined) maybeFillViewport(room);
    scheduleRead();
  }

  function renderHeader() {
    const room = activeRoom();
    dom.leaveBtn.hidden = !room;
    dom.membersToggle.hidden = !room;
    const managed = !!room && !room.isDm; // rooms have members, roles and a topic; DMs do not
    dom.partBtn.hidden = !managed || !(room.member || room.role); // a server admin may read rooms it is not in
    dom.roomPrivate.hidden = !managed || !room.private;
    const topic = managed ? room.topic : '';
    dom.roomTopic.textContent = topic;
    dom.roomTopic.title = topic;
    const canEdit = managed && isModerator(myRole(room));
    if (state.topicEdit && (!room || state.topicEdit !== room.name || !canEdit)) state.topicEdit = null;
    dom.topicForm.hidden = !state.topicEdit;
    dom.topicEditBtn.hidden = !canEdit || !!state.topicEdit;
    dom.topicEditBtn.textContent = topic ? 'Edit topic' : 'Set a topic';
    if (!state.topicEdit) dom.topicError.textContent = '';
    if (state.partConfirm && (!room || state.partConfirm !== room.name)) state.partConfirm = null;
    dom.partConfirm.hidden = !state.partConfirm;
    if (!room) {
      dom.roomTitle.textContent = 'No conversation open';
      dom.roomMeta.textContent = '';
      return;
    }
    dom.roomTitle.textContent = roomLabel(room);
    dom.leaveBtn.setAttribute('aria-label', `Close ${roomLabel(room)}`);
    dom.leaveBtn.title = room.isDm ? '' : 'Close the room here; it stays one of your rooms';
    dom.partBtn.setAttribute('aria-label', `Leave ${roomLabel(room)}`);
    if (state.partConfirm) {
      dom.partConfirmText.textContent = room.private
        ? `Leave ${roomLabel(room)}? It is private: only an invitation brings you back.`
        : `Leave ${roomLabel(room)}? It will no longer be one of your rooms.`;
    }
    if (room.joined) dom.roomMeta.textContent = room.isDm ? 'Direct message' : `${room.members.size} online`;
    else if (room.joinPending) dom.roomMeta.textContent = 'Joining…';
    else if (room.wanted && !state.connected) dom.roomMeta.textContent = 'Reconnecting…'; // re-joined on welcome
    else dom.roomMeta.textContent = room.isDm ? 'Direct message' : 'Not joined';
  }

  // The room's members with their roles (who is online marked), or, until
  // the list is loaded and in DMs, who is online. Owners and moderators get
  // the actions the rules let them take on each.
  function renderMembers() {
    const room = activeRoom();
    const focused = document.activeElement;
    const inList = dom.members.contains(focused) || dom.bans.contains(focused);
    const focusKey = inList && focused.dataset.focus ? focused.dataset.focus : null;
    dom.members.textContent = '';
    dom.modTools.hidden = !room || room.isDm || !isModerator(myRole(room));
    renderBans(room);
    if (!room) return;
    const online = new Set([...room.members].map((u) => u.toLowerCase()));
    const rows = room.roster && !room.isDm ? [...room.roster.values()] : [];
    for (const name of room.members) if (!rows.some((r) => sameUser(r.user, name))) rows.push({ user: name, role: null });
    rows.sort((a, b) => (roleRank(b.role) - roleRank(a.role)) || a.user.localeCompare(b.user));
    for (const row of rows) {
      const li = el('li', 'member');
      li.dataset.user = row.user;
      li.dataset.role = row.role || '';
      li.classList.add(online.has(row.user.toLowerCase()) ? 'online' : 'offline');
      const line = el('div', 'member-line');
      line.appendChild(el('span', 'member-name', row.user));
      if (sameUser(row.user, state.me)) { li.classList.add('self'); line.appendChild(el('span', 'you', ' (you)')); }
      if (row.role && row.role !== 'member') line.appendChild(el('span', 'role', row.role));
      li.appendChild(line);
      const actions = memberActions(room, row);
      if (actions) li.appendChild(actions);
      dom.members.appendChild(li);
    }
    const again = focusKey && dom.membersPanel.querySelector(`[data-focus="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }

  function memberButton(text, label, focusKey, onClick, className) {
    const b = el('button', className || 'member-action', text);
    b.type = 'button';
    b.setAttribute('aria-label', label);
    b.dataset.focus = focusKey;
    b.addEventListener('click', onClick);
    return b;
  }

  function memberActions(room, row) {
    if (room.isDm || !row.role || sameUser(row.user, state.me)) return null;
    const buttons = [];
    if (myRole(room) === 'owner') {
      for (const role of ROLES) {
        if (role === row.role) continue;
        const text = roleRank(role) > roleRank(row.role) ? `Make ${role}` : `Demote to ${role}`;
        buttons.push(memberButton(text, `${text}: ${row.user}`, `role-${role}-${row.user}`, () => setMemberRole(room, row.user, role)));
      }
    }
    if (canRemove(myRole(room), row.role)) {
      buttons.push(memberButton('Kick', `Kick ${row.user}`, `kick-${row.user}`, () => kickMember(room, row.user)));
      buttons.push(memberButton('Ban…', `Ban ${row.user}`, `ban-${row.user}`, () => prepareBan(row.user)));
    }
    if (buttons.length === 0) return null;
    const bar = el('div', 'member-actions');
    bar.setAttribute('role', 'group');
    bar.setAttribute('aria-label', `Actions for ${row.user}`);
    bar.append(...buttons);
    return bar;
  }

  function renderBans(room) {
    dom.bans.textContent = '';
    const bans = room && !room.isDm && isModerator(myRole(room)) && room.bans ? room.bans : [];
    dom.bansEmpty.hidden = bans.length > 0;
    for (const b of [...bans].sort((x, y) => x.user.localeCompare(y.user))) {
      const li = el('li', 'ban');
      li.dataset.user = b.user;
      const who = el('span', 'ban-text', b.user);
      const why = `${b.by ? ` by ${b.by}` : ''}${b.reason ? `: ${b.reason}` : ''}`;
      if (why) who.appendChild(el('span', 'ban-why', why));
      li.append(who, memberButton('Unban', `Unban ${b.user}`, `unban-${b.user}`, () => unbanUser(room, b.user)));
      dom.bans.appendChild(li);
    }
  }

  function renderTyping() {
    clearTimeout(state.timers.typing);
    state.timers.typing = null;
    const room = activeRoom();
    if (!room) { dom.typing.textContent = ''; return; }
    const now = Date.now();
    let next = Infinity;
    const users = [];
    for (const [user, until] of room.typing) {
      if (until <= now) { room.typing.delete(user); continue; }
      users.push(user);
      next = Math.min(next, until);
    }
    users.sort();
    dom.typing.textContent = typingText(users);
    if (next !== Infinity) state.timers.typing = setTimeout(renderTyping, next - now + 20);
  }

  function updateHistoryStatus() {
    const room = activeRoom();
    dom.loadOlderBtn.hidden = !(room && room.joined && canLoadOlder(room) && !room.loadingOlder);
    let note = '';
    if (room && room.loadingOlder) note = 'Loading older messages…';
    else if (room && room.minSeq === 1) note = `This is the beginning of ${roomLabel(room)}.`;
    dom.historyNote.textContent = note;
  }

  function updateEmptyState() {
    const room = activeRoom();
    let text = '';
    if (!room) text = state.notice || 'Join a room or start a direct message to begin.';
    else if (dom.messages.children.length === 0) text = room.joinPending ? 'Loading…' : 'No messages yet. Say hello!';
    dom.emptyState.textContent = text;
    dom.emptyState.hidden = !text;
  }

  function setSidebarOpen(open) {
    document.body.classList.toggle('sidebar-open', open);
    dom.sidebarToggle.setAttribute('aria-expanded', String(open));
    if (open) dom.roomInput.focus();
  }

  function setMembersOpen(open) {
    document.body.classList.toggle('members-open', open);
    dom.membersToggle.setAttribute('aria-expanded', String(open));
  }

  // ===== UI wiring ===========================================================

  dom.loginForm.addEventListener('submit', (ev) => { ev.preventDefault(); authSubmit('login'); });
  dom.registerBtn.addEventListener('click', () => authSubmit('register'));
  dom.logoutBtn.addEventListener('click', () => logout(''));

  dom.roomForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = dom.roomInput.value.trim().replace(/^#/, '');
    const problem = validateRoomName(name);
    dom.roomError.textContent = problem || '';
    dom.roomInput.setAttribute('aria-invalid', String(!!problem));
    if (problem) return;
    dom.roomInput.value = '';
    openRoom(name);
  });

  dom.dmForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = dom.dmInput.value.trim().replace(/^@/, '');
    let problem = validateUsername(name);
    if (!problem && name === state.me) problem = 'That is you. Enter someone else\'s username.';
    dom.dmError.textContent = problem || '';
    dom.dmInput.setAttribute('aria-invalid', String(!!problem));
    if (problem) return;
    dom.dmInput.value = '';
    openRoom(dmRoomName(state.me, name));
  });

  dom.composerForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = dom.composerInput.value;
    if (!text.trim()) return;
    const problem = sendMessage(text);
    dom.composerError.textContent = problem || '';
    dom.composerInput.setAttribute('aria-invalid', String(!!problem));
    if (problem) return;
    dom.composerInput.value = '';
    dom.composerInput.rows = 1;
    dom.composerInput.focus();
  });

  dom.composerInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && state.replyTo) {
      ev.preventDefault();
      ev.stopPropagation();
      setReplyTo(null);
      return;
    }
    if (isSubmitKey(ev)) {
      ev.preventDefault();
      if (dom.composerForm.requestSubmit) dom.composerForm.requestSubmit();
      else dom.composerForm.dispatchEvent(new Event('submit', { cancelable: true }));
    }
  });

  dom.composerInput.addEventListener('input', () => {
    const text = dom.composerInput.value;
    dom.composerInput.rows = textRows(text);
    const problem = validateMessageText(text);
    dom.composerError.textContent = problem || '';
    dom.composerInput.setAttribute('aria-invalid', String(!!problem));
    maybeSendTyping();
  });

  dom.scroller.addEventListener('scroll', () => {
    if (isNearBottom()) dom.newMessagesBtn.hidden = true;
    if (dom.scroller.scrollTop < EDGE_PX) requestOlder(activeRoom());
    const room = activeRoom();
    if (room && room.maxSeq > room.readSeq) scheduleRead(); // scrolling down reads
  }, { passive: true });

  dom.loadOlderBtn.addEventListener('click', () => requestOlder(activeRoom()));
  dom.replyCancel.addEventListener('click', () => { setReplyTo(null); dom.composerInput.focus(); });
  dom.searchForm.addEventListener('submit', (ev) => { ev.preventDefault(); runSearch(false); });
  dom.searchMoreBtn.addEventListener('click', () => runSearch(true));
  dom.newMessagesBtn.addEventListener('click', () => {
    scrollToBottom();
    dom.newMessagesBtn.hidden = true;
    dom.composerInput.focus();
  });
  dom.leaveBtn.addEventListener('click', leaveActive);
  dom.partBtn.addEventListener('click', () => {
    const room = activeRoom();
    if (!room) return;
    state.partConfirm = room.name;
    renderHeader();
    dom.partCancelBtn.focus();
  });
  dom.partConfirmBtn.addEventListener('click', () => { if (state.partConfirm) partRoom(state.partConfirm); });
  const cancelPart = () => { state.partConfirm = null; renderHeader(); dom.partBtn.focus(); };
  dom.partCancelBtn.addEventListener('click', cancelPart);
  dom.partConfirm.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    ev.preventDefault();
    ev.stopPropagation();
    cancelPart();
  });
  dom.createForm.addEventListener('submit', (ev) => { ev.preventDefault(); createRoom(); });
  dom.topicEditBtn.addEventListener('click', openTopicEditor);
  dom.topicForm.addEventListener('submit', (ev) => { ev.preventDefault(); saveTopic(); });
  dom.topicCancelBtn.addEventListener('click', closeTopicEditor);
  dom.topicInput.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    ev.preventDefault();
    ev.stopPropagation();
    closeTopicEditor();
  });
  dom.inviteForm.addEventListener('submit', (ev) => { ev.preventDefault(); inviteMember(); });
  dom.banForm.addEventListener('submit', (ev) => { ev.preventDefault(); banUser(); });
  // On a phone the open room list covers the conversation; a tap beside it closes it.
  document.getElementById('conversation').addEventListener('click', () => {
    if (document.body.classList.contains('sidebar-open') && isNarrow()) setSidebarOpen(false);
  });
  dom.sidebarToggle.addEventListener('click', () => setSidebarOpen(!document.body.classList.contains('sidebar-open')));
  dom.membersToggle.addEventListener('click', () => setMembersOpen(!document.body.classList.contains('members-open')));

  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    if (document.body.classList.contains('sidebar-open')) { setSidebarOpen(false); dom.sidebarToggle.focus(); return; }
    if (document.body.classList.contains('members-open')) { setMembersOpen(false); dom.membersToggle.focus(); return; }
    dismissAllToasts();
  });

  window.addEventListener('online', () => {
    // The network is back: don't sit out the rest of a long backoff.
    if (state.token && !state.ws) { state.attempt = Math.max(state.attempt, 1); connect(); }
  });
  window.addEventListener('offline', () => { if (state.token && !state.connected) setConn('offline', '(no network)'); });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden || !state.token) return;
    scheduleRead(); // what arrived while hidden is read once the tab is seen
    refreshRooms();
    if (!state.ws) connect();
  });

  // ===== Start ===============================================================

  (function start() {
    const token = storageGet(STORE.token);
    const user = storageGet(STORE.user);
    if (!token || !user) { showAuth(''); return; }
    let wanted = [];
    try { wanted = JSON.parse(storageGet(STORE.rooms) || '[]'); } catch (e) { wanted = []; }
    wanted = Array.isArray(wanted) ? wanted.filter((r) => typeof r === 'string') : [];
    state.admin = storageGet(STORE.admin) === '1';
    startSession(token, user, storageGet(STORE.active), wanted);
  }());
}());
