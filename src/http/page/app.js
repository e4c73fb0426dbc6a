// The shardcast chat page: joins the room named by the URL path with the `shardcast.v1`
// subprotocol (docs/protocol.md), shows messages and presence, and reconnects by itself.
//
// History and resume: every join asks for the room's last HISTORY messages (`history=`), and
// once the page has a welcome with an `epoch` it also asks to resume (`since=EPOCH:OFFSET`,
// the offset of the last message it has). A recovered resume appends exactly what was missed;
// otherwise a "some messages may be missing" marker (li.gap) comes first. Each message is
// shown once: they are keyed by epoch and offset.
//
// Tokens (docs/auth.md): a page opened as /<room>#token=<JWT> takes the token from the URL
// fragment (which the browser never sends to the server), removes it from the address bar,
// keeps it in memory only, shows the token's name and joins with it in its `hello` (so it is
// in no URL either). A token the server refuses (expired, another room) shows the server's
// reason and the page stops trying.
//
// Who is here: after each welcome the page asks `who` and keeps the member list current with
// join and leave; unique nicknames: a name taken in the room (`nick_taken`) lets the user pick
// another, or, on a reconnect, waits for the previous connection to let go of it.
//
// Length limit: the welcome states the largest message the server takes (`max_message_bytes`,
// the whole envelope in UTF-8); the page counts exactly what it would send, shows what is
// left near the limit and refuses to send more, keeping the text (see "the length limit").
//
// Safety: everything that comes from the network (nicks, texts, room names, close reasons)
// is inserted with textContent / createTextNode, never parsed as HTML; links in messages are
// built with createElement, http and https only (see "links in messages").
(function () {
  "use strict";

  const SUBPROTOCOL = "shardcast.v1";
  const NICK_KEY = "shardcast.nick";
  // Reconnect backoff: 0.5 s doubling to 30 s, times a random factor in [0.5, 1.0).
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;
  // A socket that has not been welcomed this long after being opened is given up and retried
  // (the server closes a client without a nickname after its 10 s handshake timeout anyway).
  const WELCOME_TIMEOUT_MS = 15000;
  const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
  // Messages of the room's history asked for on every join (the server's default keeps 100).
  const HISTORY = 50;
  // A history epoch as the server writes it; anything else is never sent back in `since`.
  const EPOCH = /^[0-9a-f]{16}$/;

  const path = location.pathname.replace(/^\/+|\/+$/g, "");
  const room = path === "" || path === "index.html" ? "lobby" : path;
  const roomValid = ROOM_NAME.test(room);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // `/` and `/index.html` are the lobby: connect to `/` as the page was reached.
  const baseUrl = scheme + "//" + location.host + "/" + (room === path ? room : "");

  // The connection token from `#token=…`, if any, and the name it carries (shown; the server
  // decides, and its welcome says what it decided).
  const token = takeToken();
  const tokenName = token === null ? null : nameOf(token);

  const el = {
    room: document.getElementById("room"),
    online: document.getElementById("online"),
    state: document.getElementById("state"),
    session: document.getElementById("session"),
    nick: document.getElementById("nick"),
    connect: document.getElementById("connect"),
    disconnect: document.getElementById("disconnect"),
    log: document.getElementById("log"),
    list: document.getElementById("messages"),
    composer: document.getElementById("composer"),
    text: document.getElementById("text"),
    send: document.getElementById("send"),
    roomLeft: document.getElementById("room-left"),
    tooLong: document.getElementById("too-long"),
  };

  // Connection state. `wanted` is the user's intent: true from Connect until Disconnect.
  let socket = null;
  let wanted = false;
  let myId = null; // session id from the current socket's welcome
  let reclaim = null; // the last welcome's token for taking the nickname back (reconnects)
  let attempt = 0; // reconnect attempts since the last welcome
  let retryTimer = null;
  let countdownTimer = null;
  let welcomeTimer = null;

  // Resume state (see the header). `epoch` is the room's history epoch from the last welcome
  // (null: never joined, or history is off); `lastOffset` the offset of the last message of
  // that epoch this page has, which is what `since=` names.
  let epoch = null;
  let lastOffset = 0;
  let everJoined = false; // a welcome came since the page was loaded
  let sentSince = false; // the current socket asked to resume
  let replayLeft = 0; // history messages still to come after the current socket's welcome
  let welcomeOffset = null; // that welcome's offset, counted once its replay has arrived
  let welcomeItem = null; // its notice: replayed messages go before it, in time order
  const shown = new Set(); // "epoch:offset" of every message shown
  const ownIds = new Set(); // this page's session ids in the current epoch

  if (token !== null) {
    if (tokenName !== null) el.nick.value = tokenName;
    el.nick.title = tokenName !== null ? "the name in your token" : "your token has no name: pick one";
    el.session.dataset.token = tokenName !== null ? "named" : "unnamed";
  }

  el.room.textContent = "#" + room;
  // Shown by CSS while the list is empty (an attribute, so never parsed as HTML).
  el.list.dataset.empty = "Pick a nickname and press Connect to join #" + room + ".";
  document.title = "#" + room + " \u00b7 shardcast";

  // ---- rendering -----------------------------------------------------------------------

  function setState(name, label) {
    el.state.dataset.state = name;
    el.state.className = "state " + name;
    el.state.textContent = label || name;
    const joined = name === "connected";
    const idle = name === "disconnected";
    el.send.disabled = !joined;
    el.nick.disabled = !idle || tokenName !== null;
    el.connect.disabled = name === "connecting" || joined || !roomValid;
    el.connect.textContent = name === "reconnecting" ? "Retry now" : "Connect";
    el.disconnect.disabled = idle;
    if (!joined) setOnline(null);
    updateLength();
  }

  function setOnline(count) {
    el.online.dataset.count = count === null ? "" : String(count);
    el.online.textContent = count === null ? "\u2013" : count + " online";
  }

  // A <time> for `ts` (ms since the epoch, the server's clock), or for now.
  function timeElement(ts) {
    let date = new Date(typeof ts === "number" ? ts : Date.now());
    if (!Number.isFinite(date.getTime())) date = new Date();
    const time = document.createElement("time");
    time.dateTime = date.toISOString();
    time.title = date.toLocaleString();
    time.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return time;
  }

  // Appends an item (or inserts it before `before`), keeping the view pinned to the bottom
  // if it was there.
  function append(item, before) {
    const atBottom = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
    if (before && before.parentNode === el.list) el.list.insertBefore(item, before);
    else el.list.append(item);
    if (atBottom) el.log.scrollTop = el.log.scrollHeight;
  }

  function nickNode(nick) {
    const span = document.createElement("span");
    span.className = "nick";
    if (typeof nick === "string") {
      span.textContent = nick;
    } else {
      span.textContent = "anonymous";
      span.classList.add("anonymous");
      span.title = "a plain (non-v1) client";
    }
    return span;
  }

  // A chat message. `env` is a `message` envelope; one replayed from history goes before
  // the welcome notice that it precedes in time.
  function showMessage(env) {
    const item = document.createElement("li");
    item.dataset.kind = "message";
    item.dataset.id = String(env.id);
    if (isOffset(env.offset) && epoch !== null) {
      item.dataset.epoch = epoch;
      item.dataset.offset = String(env.offset);
    }
    const replayed = env.history === true;
    if (replayed) {
      item.classList.add("history");
      item.dataset.history = "true";
      item.title = "sent before you joined";
    }
    const own = ownIds.has(env.id);
    if (own) {
      item.classList.add("own");
      item.dataset.own = "true";
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(nickNode(env.nick), timeElement(env.ts));
    const body = document.createElement("div");
    body.className = "text";
    body.append(linkify(String(env.text)));
    item.append(meta, body);
    append(item, replayed ? welcomeItem : null);
  }

  // A one-line notice (join, leave, error, status); `parts` are strings or nodes.
  function showNotice(kind, parts, ts) {
    const item = document.createElement("li");
    item.dataset.kind = kind;
    item.className = "notice " + kind;
    const body = document.createElement("span");
    body.className = "body";
    for (const part of parts) {
      body.append(typeof part === "string" ? document.createTextNode(part) : part);
    }
    item.append(body, timeElement(ts));
    append(item);
    return item;
  }

  // ---- links in messages ---------------------------------------------------------------

  // An http(s) URL in a message: from the scheme (not inside a word) to the next space, quote
  // or angle bracket. Anything else (javascript:, data:, www.example.com) stays text.
  const URL_CANDIDATE = /(?<![A-Za-z0-9])https?:\/\/[^\s<>"`]+/gi;
  const CLOSING = { ")": "(", "]": "[", "}": "{" };

  // `text` as text nodes and links, built with DOM calls only.
  function linkify(text) {
    const fragment = document.createDocumentFragment();
    let from = 0;
    for (const match of text.matchAll(URL_CANDIDATE)) {
      const shown = trimUrl(match[0]);
      const href = httpHref(shown);
      if (href === null) continue;
      fragment.append(text.slice(from, match.index));
      const link = document.createElement("a");
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.textContent = shown;
      fragment.append(link);
      from = match.index + shown.length;
    }
    fragment.append(text.slice(from));
    return fragment;
  }

  // The URL without what usually ends the sentence around it: trailing . , ; : ! ? ' and a
  // closing bracket that has no opening one inside the URL ("(see https://x.test/a)").
  function trimUrl(url) {
    for (;;) {
      const last = url.slice(-1);
      const opening = CLOSING[last];
      const unmatched = opening !== undefined && url.split(last).length > url.split(opening).length;
      if (url === "" || (!".,;:!?'*".includes(last) && !unmatched)) return url;
      url = url.slice(0, -1);
    }
  }

  // The normalized href of an http(s) URL with a host, or null.
  function httpHref(text) {
    let url;
    try {
      url = new URL(text);
    } catch (err) {
      return null;
    }
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "" ? url.href : null;
  }

  // ---- the length limit ----------------------------------------------------------------

  // The server closes (1009) a connection whose message is over its --max-message, and the
  // message is lost; its welcome states that limit. Until a welcome, the server's default.
  const DEFAULT_MAX_MESSAGE_BYTES = 65536;
  const utf8 = new TextEncoder();
  let maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;

  // Exactly what the page sends for `text`.
  function envelopeOf(text) {
    return JSON.stringify({ type: "message", text: text });
  }

  function limitFrom(welcome) {
    const limit = welcome.max_message_bytes;
    if (Number.isSafeInteger(limit) && limit > 0) maxMessageBytes = limit;
  }

  // Shows how much is left once the text is near the limit (the last tenth, or 1,000
  // bytes), and the note when it is over; Send is off while it is. True when it may be sent.
  // The count changes with every key, so it is not announced (aria-live off); the note is,
  // once, when it appears.
  function updateLength() {
    const text = el.text.value;
    const size = text === "" ? 0 : utf8.encode(envelopeOf(text)).length;
    const left = maxMessageBytes - size;
    const over = left < 0;
    el.roomLeft.hidden = text === "" || left > Math.max(maxMessageBytes / 10, 1000);
    el.roomLeft.dataset.left = String(left);
    el.roomLeft.classList.toggle("over", over);
    el.roomLeft.textContent = over ? bytes(-left) + " too long" : bytes(left) + " left";
    el.roomLeft.title = "the server takes messages of up to " + bytes(maxMessageBytes) + " (UTF-8, as sent)";
    const note = over
      ? "Too long to send: the server takes at most " + bytes(maxMessageBytes) +
        " per message. Shorten it or send it in parts; your text stays here."
      : "";
    if (el.tooLong.textContent !== note) el.tooLong.textContent = note;
    el.tooLong.hidden = !over;
    el.send.disabled = el.state.dataset.state !== "connected" || over;
    return !over;
  }

  function bytes(n) {
    return n.toLocaleString("en") + (n === 1 ? " byte" : " bytes");
  }

  // The text box grows with its text (CSS caps it, then it scrolls).
  function fitText() {
    el.text.style.height = "auto";
    el.text.style.height = el.text.scrollHeight + el.text.offsetHeight - el.text.clientHeight + "px";
  }

  // ---- the token -----------------------------------------------------------------------

  // The token in the fragment (`#token=…`, among other `&`-separated parts), taken out of
  // the address bar so that it is neither bookmarked nor shared with the link.
  function takeToken() {
    const parts = location.hash.replace(/^#/, "").split("&");
    const found = parts.find(function (p) {
      return p.startsWith("token=");
    });
    if (found === undefined) return null;
    let value = found.slice("token=".length);
    try {
      value = decodeURIComponent(value);
    } catch (err) {
      // Not percent-encoded after all: use it as it is.
    }
    const rest = parts.filter(function (p) {
      return p !== found && p !== "";
    });
    try {
      history.replaceState(null, "", location.pathname + location.search +
        (rest.length ? "#" + rest.join("&") : ""));
    } catch (err) {
      // Some embeddings forbid it; the fragment still never reaches the server.
    }
    return value === "" ? null : value;
  }

  // The `name` claim of a JWT, unverified (the server checks it), or null.
  function nameOf(jwt) {
    try {
      const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = payload + "====".slice(payload.length % 4 || 4);
      const bytes = Uint8Array.from(atob(padded), function (c) {
        return c.charCodeAt(0);
      });
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims !== null && typeof claims.name === "string" && claims.name !== "" ? claims.name : null;
    } catch (err) {
      return null;
    }
  }

  // ---- connection ----------------------------------------------------------------------

  function clearTimers() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    clearTimeout(welcomeTimer);
    retryTimer = countdownTimer = welcomeTimer = null;
  }

  function open() {
    clearTimers();
    const nick = el.nick.value.trim();
    myId = null;
    replayLeft = 0;
    welcomeOffset = null;
    welcomeItem = null;
    setState("connecting");
    // With a token, the nickname (if the token has no name) travels in the hello with it.
    let query = token === null ? "?nick=" + encodeURIComponent(nick) + "&" : "?";
    query += "history=" + HISTORY;
    sentSince = epoch !== null;
    if (sentSince) query += "&since=" + epoch + ":" + lastOffset;
    // The last welcome's token takes the name back from a connection of this page that the
    // server has not yet seen drop (it is good for that name only, so a new name ignores it).
    if (reclaim !== null) query += "&reclaim=" + encodeURIComponent(reclaim);
    const ws = new WebSocket(baseUrl + query, SUBPROTOCOL);
    ws.binaryType = "arraybuffer";
    socket = ws;
    if (token !== null) {
      ws.onopen = function () {
        const hello = { type: "hello", token: token };
        if (tokenName === null) hello.nick = nick;
        if (socket === ws) ws.send(JSON.stringify(hello));
      };
    }
    welcomeTimer = setTimeout(function () {
      if (socket === ws && myId === null) ws.close();
    }, WELCOME_TIMEOUT_MS);
    ws.onmessage = function (event) {
      if (socket === ws) receive(event.data);
    };
    ws.onclose = function (event) {
      if (socket === ws) closed(event);
    };
  }

  function receive(data) {
    if (typeof data !== "string") {
      // Plain clients may send binary; v1 forwards it as is. Show that it happened.
      showNotice("binary", ["binary message (" + data.byteLength + " bytes)"]);
      return;
    }
    let env;
    try {
      env = JSON.parse(data);
    } catch (err) {
      console.warn("shardcast: not JSON", data);
      return;
    }
    if (env === null || typeof env !== "object") return;
    switch (env.type) {
      case "welcome":
        clearTimeout(welcomeTimer);
        myId = env.id;
        attempt = 0;
        try {
          // A token's name is the token's, not a nickname to offer next time.
          if (token === null) localStorage.setItem(NICK_KEY, env.nick);
        } catch (err) {
          // Storage may be disabled (private mode); the nick just is not remembered.
        }
        limitFrom(env);
        reclaim = typeof env.reclaim === "string" ? env.reclaim : null;
        setState("connected");
        setOnline(env.online);
        membersWelcome(env);
        nickJoined(env);
        resumeFrom(env);
        welcomeItem = showNotice("welcome", ["You joined #" + env.room + " as ", nickNode(env.nick)]);
        settleReplay();
        el.text.focus();
        break;
      case "message":
        received(env);
        break;
      case "join":
        setOnline(env.online);
        memberChanged(env);
        showNotice("join", [nickNode(env.nick), " joined"]);
        break;
      case "leave":
        setOnline(env.online);
        memberChanged(env);
        showNotice("leave", [nickNode(env.nick), " left"]);
        break;
      case "online":
        // The count changed with no member to name (a cluster node was lost or came back).
        setOnline(env.online);
        askMembers();
        break;
      case "members":
        receivedMembers(env);
        break;
      case "notice":
        // The server's own news (in a cluster: cross-node delivery stopped or resumed).
        if (typeof env.online === "number") setOnline(env.online);
        showNotice("server", [String(env.text || env.code || "")]).dataset.code = String(env.code);
        break;
      case "error":
        showError(env);
        break;
      default:
        // Later versions may add envelope types; ignore what we do not know.
        break;
    }
  }

  // Takes the resume state from a welcome: the same epoch and offset if the server recovered
  // what this page missed, else a gap marker and the new epoch.
  function resumeFrom(env) {
    const recovered = sentSince && env.recovered === true && env.epoch === epoch;
    if (!recovered) {
      // Any join after the first may have missed messages, unless the server vouches.
      if (everJoined) showGap();
      const next = typeof env.epoch === "string" && EPOCH.test(env.epoch) ? env.epoch : null;
      // Session ids are unique within one server run only; a new epoch may be a new run.
      if (next === null || next !== epoch) ownIds.clear();
      epoch = next;
      lastOffset = 0;
    }
    everJoined = true;
    ownIds.add(env.id);
    replayLeft = typeof env.replay === "number" && env.replay > 0 ? env.replay : 0;
    welcomeOffset = isOffset(env.offset) ? env.offset : null;
  }

  // Once the welcome's replay has arrived (at once if there is none), the page has every
  // message up to the welcome's offset, and live messages go at the end again.
  function settleReplay() {
    if (replayLeft > 0) return;
    if (epoch !== null && welcomeOffset !== null) lastOffset = Math.max(lastOffset, welcomeOffset);
    welcomeOffset = null;
    welcomeItem = null;
  }

  function received(env) {
    if (replayLeft > 0) replayLeft -= 1;
    let fresh = true;
    if (epoch !== null && isOffset(env.offset)) {
      const key = epoch + ":" + env.offset;
      fresh = !shown.has(key);
      shown.add(key);
      lastOffset = Math.max(lastOffset, env.offset);
    }
    if (fresh) showMessage(env);
    // The last replayed message must not go before the welcome: settle after showing it.
    settleReplay();
  }

  function isOffset(value) {
    return Number.isSafeInteger(value) && value >= 0;
  }

  // The marker for a join that may have missed messages: a server restart, history that no
  // longer reaches back far enough, or a server without history.
  function showGap() {
    const item = showNotice("gap", ["some messages may be missing"]);
    item.title = "the server could not replay everything sent while you were away";
  }

  function showError(env) {
    if (memberError(env) || nickTaken(env)) return;
    if (env.code === "history_limit") {
      // The server keeps fewer than HISTORY messages and says so; it sends what it has.
      console.info("shardcast:", env.text);
      return;
    }
    const refused = (env.code === "unauthorized" || env.code === "forbidden") && myId === null;
    const text = refused ? "Cannot join #" + room + ": " + String(env.text) : String(env.text);
    const item = showNotice("error", [text]);
    item.dataset.code = String(env.code);
    if (refused) {
      // The token is expired, invalid or not for this room: retrying cannot help.
      stop();
      return;
    }
    if (env.code === "bad_nick" && myId === null) {
      // The server waits for a `hello` with a better nick; let the user type one and
      // connect again rather than retrying the same bad nick forever.
      stop();
      el.nick.focus();
      el.nick.select();
    }
  }

  function closed(event) {
    const wasJoined = myId !== null;
    socket = null;
    myId = null;
    clearTimers();
    clearMembers();
    if (wasJoined) nickLost();
    if (wasJoined) {
      const why = event.reason ? event.reason + ", " : "";
      showNotice("status", ["Disconnected (" + why + "code " + event.code + ")"]);
    }
    if (wanted) scheduleReconnect();
    else setState("disconnected");
  }

  function scheduleReconnect() {
    const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, attempt)) *
      (0.5 + Math.random() / 2);
    attempt = Math.min(attempt + 1, 30);
    const due = Date.now() + delay;
    const tick = function () {
      const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      setState("reconnecting", "reconnecting in " + seconds + " s");
    };
    tick();
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(open, delay);
  }

  // Ends the connection on the user's behalf: no reconnect.
  function stop() {
    wanted = false;
    clearTimers();
    const ws = socket;
    socket = null;
    myId = null;
    clearMembers();
    if (ws) ws.close(1000, "bye");
    setState("disconnected");
  }

  function start() {
    if (!roomValid) return;
    if (el.nick.value.trim() === "" && tokenName === null) {
      el.nick.focus();
      return;
    }
    wanted = true;
    attempt = 0;
    open();
  }

  // ---- who is here ---------------------------------------------------------------------
  //
  // The list is a snapshot (`members`, the answer to `who`) kept current by join and leave.
  // The snapshot is taken somewhere between the `who` and its answer, so the joins and leaves
  // that arrive in between are applied again on top of it: whichever side of the snapshot
  // they fell on, the result is right. An `online` envelope (members nobody named: a cluster
  // node was lost) asks again. The server answers one `who` a second per connection; the page
  // never asks faster.

  const WHO_INTERVAL_MS = 1100;
  const BUSY_RETRY_MS = 2000;
  const memberEls = {
    box: document.getElementById("members"),
    title: document.getElementById("members-title"),
    list: document.getElementById("member-list"),
    more: document.getElementById("members-more"),
  };
  const members = new Map(); // session id -> { nick, user }
  let membersSince = null; // joins and leaves since the pending `who` was sent, or null
  let membersTruncated = false; // the last answer listed fewer than there were
  let lastWho = 0;
  let whoTimer = null;
  // Wide screens show the list at once; narrow ones keep it folded until asked.
  if (window.matchMedia("(min-width: 761px)").matches) memberEls.box.open = true;

  function membersWelcome(env) {
    members.clear();
    members.set(env.id, { nick: env.nick, user: env.user });
    renderMembers();
    askMembers();
  }

  function askMembers() {
    if (socket === null || myId === null || whoTimer !== null) return;
    const wait = lastWho + WHO_INTERVAL_MS - Date.now();
    if (wait > 0) {
      whoTimer = setTimeout(function () {
        whoTimer = null;
        askMembers();
      }, wait);
      return;
    }
    lastWho = Date.now();
    membersSince = [];
    socket.send(JSON.stringify({ type: "who" }));
  }

  function applyMember(env) {
    if (typeof env.id !== "string") return;
    if (env.type === "join") members.set(env.id, { nick: env.nick, user: env.user });
    else if (env.type === "leave") members.delete(env.id);
  }

  function memberChanged(env) {
    if (membersSince !== null) membersSince.push(env);
    applyMember(env);
    renderMembers();
  }

  function receivedMembers(env) {
    if (!Array.isArray(env.members)) return;
    members.clear();
    for (const m of env.members) {
      if (m !== null && typeof m === "object" && typeof m.id === "string") {
        members.set(m.id, { nick: m.nick, user: m.user });
      }
    }
    if (myId !== null && !members.has(myId)) members.set(myId, { nick: null, user: undefined });
    for (const change of membersSince || []) applyMember(change);
    membersSince = null;
    membersTruncated = env.truncated === true;
    renderMembers();
  }

  // A `who` the server could not take now; true when `env` was about the list.
  function memberError(env) {
    if (membersSince === null) return false;
    if (env.code === "busy" || (env.code === "rate_limited" && /\bwho\b/.test(String(env.text)))) {
      membersSince = null;
      clearTimeout(whoTimer);
      whoTimer = setTimeout(function () {
        whoTimer = null;
        askMembers();
      }, BUSY_RETRY_MS);
      return true;
    }
    return false;
  }

  function clearMembers() {
    members.clear();
    membersSince = null;
    membersTruncated = false;
    clearTimeout(whoTimer);
    whoTimer = null;
    renderMembers();
  }

  // Named members by name (as the server sorts them), then plain clients; yours marked.
  function renderMembers() {
    const entries = Array.from(members, function (pair) {
      return { id: pair[0], nick: pair[1].nick, user: pair[1].user };
    });
    const named = function (m) {
      return typeof m.nick === "string";
    };
    entries.sort(function (a, b) {
      if (named(a) !== named(b)) return named(a) ? -1 : 1;
      if (named(a)) {
        const x = a.nick.toLowerCase();
        const y = b.nick.toLowerCase();
        if (x !== y) return x < y ? -1 : 1;
      }
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    const items = entries.map(function (m) {
      const item = document.createElement("li");
      item.dataset.id = m.id;
      item.append(nickNode(m.nick));
      if (typeof m.user === "string") {
        const mark = document.createElement("span");
        mark.className = "verified";
        mark.textContent = "\u2713";
        mark.title = "signed in as " + m.user;
        item.append(mark);
      }
      if (m.id === myId) {
        item.classList.add("me");
        item.dataset.me = "true";
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = "(you)";
        item.append(you);
      }
      return item;
    });
    memberEls.list.replaceChildren.apply(memberEls.list, items);
    // A big room's answer lists the first 1,000: the online count says how many more there are.
    const online = el.online.dataset.count === "" ? 0 : Number(el.online.dataset.count);
    const unlisted = membersTruncated ? online - entries.length : 0;
    memberEls.more.hidden = !(unlisted > 0);
    memberEls.more.textContent = "and " + unlisted + " more";
    const count = Math.max(entries.length, membersTruncated ? online : 0);
    memberEls.title.textContent = entries.length === 0 ? "Members" : "Members (" + count + ")";
  }

  // ---- unique nicknames ----------------------------------------------------------------
  //
  // `nick_taken` before the welcome: someone in the room has the name. After a drop the page
  // reconnects with its last welcome's reclaim token, which takes the name back from its own
  // previous connection at once. The token can miss only when an attempt took the name and
  // dropped before its welcome (and new token) arrived; that connection holds the name until
  // the server sees it go (up to its ping interval and pong timeout, 40 s by default), so the
  // page keeps reconnecting with the same name for a while. Otherwise the user picks another
  // name; nothing typed is lost.

  const HELD_BY_US_FOR_MS = 60000;
  let lostAt = null; // when the last joined connection ended
  let joinedAs = null; // the nickname of the last welcome

  function nickTaken(env) {
    if (env.code !== "nick_taken" || myId !== null) return false;
    const nick = el.nick.value.trim();
    const ours = lostAt !== null && joinedAs !== null &&
      nick.toLowerCase() === joinedAs.toLowerCase() && Date.now() - lostAt < HELD_BY_US_FOR_MS;
    if (ours && wanted && socket !== null) {
      showNotice("status", ["\u201c" + nick + "\u201d is still held by your previous connection: retrying"]);
      socket.close(1000, "name still held");
      return true;
    }
    const item = showNotice("error", ["\u201c" + nick + "\u201d is taken in #" + room + ": choose another nickname"]);
    item.dataset.code = "nick_taken";
    stop();
    el.nick.setAttribute("aria-invalid", "true");
    el.nick.focus();
    el.nick.select();
    return true;
  }

  el.nick.addEventListener("input", function () {
    el.nick.removeAttribute("aria-invalid");
  });

  // Remembers the name and the moment of a drop, for `nickTaken`.
  function nickJoined(env) {
    joinedAs = typeof env.nick === "string" ? env.nick : null;
    lostAt = null;
    el.nick.removeAttribute("aria-invalid");
  }

  function nickLost() {
    if (joinedAs !== null && lostAt === null) lostAt = Date.now();
  }

  // ---- user input ----------------------------------------------------------------------

  el.session.addEventListener("submit", function (event) {
    event.preventDefault();
    if (socket === null) start();
  });

  el.disconnect.addEventListener("click", function () {
    if (socket !== null) showNotice("status", ["You left #" + room]);
    stop();
  });

  el.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    sendMessage();
  });

  // Enter sends; Shift+Enter adds a line (as does Enter while an input method composes).
  el.text.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    sendMessage();
  });

  el.text.addEventListener("input", function () {
    fitText();
    updateLength();
  });

  // Sends the text box's message, unless it is over the limit: then the note says so and the
  // text stays, as it does while the connection is not open.
  function sendMessage() {
    const text = el.text.value;
    if (text.trim() === "" || myId === null || socket === null) return;
    if (socket.readyState !== WebSocket.OPEN) return;
    if (!updateLength()) {
      el.text.focus();
      return;
    }
    socket.send(envelopeOf(text));
    el.text.value = "";
    fitText();
    updateLength();
    el.text.focus();
  }

  // Back online after a network change: retry at once instead of waiting out the backoff.
  window.addEventListener("online", function () {
    if (wanted && socket === null) open();
  });

  setState("disconnected");
  if (!roomValid) {
    showNotice("error", ["\u201c" + path + "\u201d is not a room name: use 1\u201364 of A\u2013Z a\u2013z 0\u20139 - _"]);
    return;
  }
  let remembered = null;
  try {
    remembered = localStorage.getItem(NICK_KEY);
  } catch (err) {
    remembered = null;
  }
  if (tokenName !== null) {
    start();
  } else if (remembered) {
    el.nick.value = remembered;
    start();
  } else {
    el.nick.focus();
  }
})();
