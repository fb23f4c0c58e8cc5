// The chat panel of a stream's page: a WebSocket joined with the owner's
// access token (the streamer role), so it can read, send, delete and ban.

import { getToken, request } from "./api.js";
import { confirmAction, el, errorBox, formatTime, showError } from "./dom.js";

const RECONNECT_MS = 3000;
// How often the ban list is fetched while the panel is open. A ban sends
// the chat a notice, but an unban through the API or another tab, an
// expired ban and a ban made while the socket was reconnecting do not.
// Each refresh is one small GET, skipped while the tab is hidden.
const BANS_REFRESH_MS = 5000;
// Close codes after which joining again cannot succeed: unauthorized,
// forbidden, stream not found.
const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404]);

export function chatPanel(streamId) {
  const state = el("p", { id: "chat-state", "aria-live": "polite" }, "Connecting…");
  const error = errorBox();
  const list = el("ol", { class: "chat", "aria-label": "Chat messages" });
  const text = el("input", { id: "chat-text", name: "text", maxLength: 500, required: true, autocomplete: "off" });
  const section = el("section", { "aria-labelledby": "chat-heading" },
    el("h2", { id: "chat-heading" }, "Chat"),
    state,
    error,
    list,
    el("form", { class: "field-row", onsubmit: (event) => send(event) },
      el("label", { for: "chat-text" }, "Message", text),
      el("button", { type: "submit" }, "Send")));
  const bans = el("ul", { class: "items", "aria-label": "Banned viewers" });
  section.append(el("h3", {}, "Banned viewers"), bans);

  let socket = null;
  let closed = false;
  let timer = null;

  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/api/streams/${encodeURIComponent(streamId)}/chat`);
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "join", token: getToken() }));
    });
    socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      if (closed) return;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        state.textContent = "Disconnected from the chat.";
        return;
      }
      state.textContent = "Disconnected from the chat; reconnecting…";
      timer = setTimeout(connect, RECONNECT_MS);
    });
  };

  const receive = (frame) => {
    if (frame.type === "welcome") {
      state.textContent = `Connected as ${frame.display_name} (${frame.role}).`;
      error.textContent = "";
    } else if (frame.type === "history") {
      list.replaceChildren(...frame.messages.map(messageItem));
    } else if (frame.type === "message") {
      list.append(messageItem(frame.message));
    } else if (frame.type === "deleted") {
      list.querySelector(`[data-message-id="${CSS.escape(frame.message_id)}"]`)?.remove();
    } else if (frame.type === "notice") {
      // A ban made elsewhere (another tab, the API) arrives as this notice,
      // so the ban list is fetched again.
      state.textContent = frame.text;
      if (frame.code === "viewer_banned") refreshBans();
    } else if (frame.type === "error") {
      error.textContent = `Chat error (${frame.code}): ${frame.message}`;
    }
  };

  const send = (event) => {
    event.preventDefault();
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      error.textContent = "The chat is not connected yet; try again in a few seconds.";
      return;
    }
    socket.send(JSON.stringify({ type: "send", text: text.value }));
    text.value = "";
  };

  const messageItem = (message) => {
    const remove = () => {
      socket?.send(JSON.stringify({ type: "delete", message_id: message.id }));
    };
    const ban = async () => {
      if (!(await confirmAction(`Ban ${message.display_name} from this chat?`, "Ban"))) return;
      try {
        await request("POST", `/api/streams/${streamId}/chat/bans`, { viewer_id: message.viewer_id });
        state.textContent = `${message.display_name} is banned.`;
        await refreshBans();
      } catch (exc) {
        showError(error, exc);
      }
    };
    return el("li", { "data-message-id": message.id },
      el("strong", {}, message.display_name), ` (${message.role}): `,
      el("span", { class: "chat-text" }, message.text),
      " ",
      el("button", { type: "button", class: "link", onclick: remove, "aria-label": `Delete message from ${message.display_name}` }, "Delete"),
      message.role === "viewer"
        ? el("button", { type: "button", class: "link", onclick: ban, "aria-label": `Ban ${message.display_name}` }, "Ban")
        : null);
  };

  let bansJson = null;
  const refreshBans = async () => {
    try {
      const active = await request("GET", `/api/streams/${encodeURIComponent(streamId)}/chat/bans`);
      // An unchanged list is left as it is, so the focus stays on an Unban
      // button between refreshes.
      const json = JSON.stringify(active);
      if (json === bansJson) return;
      bansJson = json;
      const items = active.map(banItem);
      if (items.length === 0) items.push(el("li", {}, "Nobody is banned."));
      bans.replaceChildren(...items);
    } catch (exc) {
      showError(error, exc);
    }
  };

  const banItem = (ban) => {
    const unban = async () => {
      try {
        await request("DELETE", `/api/streams/${encodeURIComponent(streamId)}/chat/bans/${ban.id}`);
        state.textContent = `${ban.viewer_id} may join the chat again.`;
        await refreshBans();
      } catch (exc) {
        showError(error, exc);
      }
    };
    const until = ban.expires_at ? `until ${formatTime(ban.expires_at)}` : "permanently";
    return el("li", { "data-ban-id": ban.id },
      el("strong", {}, ban.viewer_id),
      el("span", {}, `banned ${until}`),
      ban.reason ? el("span", {}, `(${ban.reason})`) : null,
      el("button", { type: "button", onclick: unban, "aria-label": `Unban ${ban.viewer_id}` }, "Unban"));
  };

  connect();
  refreshBans();
  const bansTimer = setInterval(() => {
    if (!document.hidden) refreshBans();
  }, BANS_REFRESH_MS);
  const stop = () => {
    closed = true;
    clearTimeout(timer);
    clearInterval(bansTimer);
    socket?.close(1000, "left the page");
  };
  return { section, stop };
}
