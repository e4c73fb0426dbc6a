// The shardcast chat page: joins the room named by the URL path with the `shardcast.v1`
// subprotocol (docs/protocol.md), shows messages and presence, and reconnects by itself.
//
// Safety: everything that comes from the network (nicks, texts, room names, close reasons)
// is inserted with textContent / createTextNode, never parsed as HTML.
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

  const path = location.pathname.replace(/^\/+|\/+$/g, "");
  const room = path === "" || path === "index.html" ? "lobby" : path;
  const roomValid = ROOM_NAME.test(room);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // `/` and `/index.html` are the lobby: connect to `/` as the page was reached.
  const baseUrl = scheme + "//" + location.host + "/" + (room === path ? room : "");

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
  };

  // Connection state. `wanted` is the user's intent: true from Connect until Disconnect.
  let socket = null;
  let wanted = false;
  let myId = null; // session id from the current socket's welcome
  let attempt = 0; // reconnect attempts since the last welcome
  let retryTimer = null;
  let countdownTimer = null;
  let welcomeTimer = null;

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
    el.nick.disabled = !idle;
    el.connect.disabled = name === "connecting" || joined || !roomValid;
    el.connect.textContent = name === "reconnecting" ? "Retry now" : "Connect";
    el.disconnect.disabled = idle;
    if (!joined) setOnline(null);
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

  // Appends an item, keeping the view pinned to the bottom if it was there.
  function append(item) {
    const atBottom = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
    el.list.append(item);
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

  // A chat message. `env` is a `message` envelope.
  function showMessage(env) {
    const item = document.createElement("li");
    item.dataset.kind = "message";
    item.dataset.id = String(env.id);
    const own = myId !== null && env.id === myId;
    if (own) {
      item.classList.add("own");
      item.dataset.own = "true";
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(nickNode(env.nick), timeElement(env.ts));
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = String(env.text);
    item.append(meta, body);
    append(item);
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
    setState("connecting");
    const ws = new WebSocket(baseUrl + "?nick=" + encodeURIComponent(nick), SUBPROTOCOL);
    ws.binaryType = "arraybuffer";
    socket = ws;
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
          localStorage.setItem(NICK_KEY, env.nick);
        } catch (err) {
          // Storage may be disabled (private mode); the nick just is not remembered.
        }
        setState("connected");
        setOnline(env.online);
        showNotice("welcome", ["You joined #" + env.room + " as ", nickNode(env.nick)]);
        el.text.focus();
        break;
      case "message":
        showMessage(env);
        break;
      case "join":
        setOnline(env.online);
        showNotice("join", [nickNode(env.nick), " joined"]);
        break;
      case "leave":
        setOnline(env.online);
        showNotice("leave", [nickNode(env.nick), " left"]);
        break;
      case "online":
        // The count changed with no member to name (a cluster node was lost or came back).
        setOnline(env.online);
        break;
      case "error":
        showError(env);
        break;
      default:
        // Later versions may add envelope types; ignore what we do not know.
        break;
    }
  }

  function showError(env) {
    const item = showNotice("error", [String(env.text)]);
    item.dataset.code = String(env.code);
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
    if (ws) ws.close(1000, "bye");
    setState("disconnected");
  }

  function start() {
    if (!roomValid) return;
    if (el.nick.value.trim() === "") {
      el.nick.focus();
      return;
    }
    wanted = true;
    attempt = 0;
    open();
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
    const text = el.text.value;
    if (text.trim() === "" || myId === null || socket === null) return;
    socket.send(JSON.stringify({ type: "message", text: text }));
    el.text.value = "";
    el.text.focus();
  });

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
  if (remembered) {
    el.nick.value = remembered;
    start();
  } else {
    el.nick.focus();
  }
})();
