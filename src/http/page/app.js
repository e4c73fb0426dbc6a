// The shardcast chat page: joins the room named by the URL path and relays text.
// All received text is inserted with textContent, never as HTML.
(function () {
  "use strict";
  const path = location.pathname.replace(/^\/+|\/+$/g, "");
  const room = path === "" ? "lobby" : path;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = scheme + "//" + location.host + "/" + (path === "" ? "" : encodeURIComponent(path));

  const list = document.getElementById("messages");
  const state = document.getElementById("state");
  const input = document.getElementById("text");
  document.getElementById("room").textContent = "#" + room;

  let socket = null;
  let retry = 0;

  function setState(name) {
    state.textContent = name;
    state.className = "state " + name;
  }

  function show(text, kind) {
    const item = document.createElement("li");
    if (kind) item.className = kind;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    const body = document.createElement("span");
    body.textContent = text;
    item.append(time, body);
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }

  function connect() {
    setState("connecting");
    socket = new WebSocket(url);
    socket.onopen = function () {
      retry = 0;
      setState("connected");
      show("joined #" + room, "notice");
    };
    socket.onmessage = function (event) {
      if (typeof event.data === "string") show(event.data);
      else show("[binary message]", "notice");
    };
    socket.onclose = function () {
      setState("disconnected");
      // Exponential backoff with jitter, capped at 30 s.
      const delay = Math.min(30000, 500 * Math.pow(2, retry++)) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  document.getElementById("composer").addEventListener("submit", function (event) {
    event.preventDefault();
    if (input.value !== "" && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(input.value);
      input.value = "";
    }
  });

  connect();
})();
