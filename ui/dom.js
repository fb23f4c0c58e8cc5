// Small DOM helpers. Text always goes in through textContent, never as
// HTML, so names and titles from the API cannot inject markup.

// Creates an element: attributes and properties from `attrs` ("on*" keys
// add event listeners), then the children (strings become text nodes).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name in node && typeof value !== "string") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A labelled input: the label wraps the control, so clicking the label
// focuses it and screen readers read the label with it.
export function field(label, attrs) {
  const input = el("input", attrs);
  return { label: el("label", {}, label, input), input };
}

// An alert region for errors; setting its text announces it.
export function errorBox() {
  return el("p", { class: "error", role: "alert" });
}

export function showError(box, error) {
  box.textContent = error && error.message ? error.message : String(error);
}

export function badge(status) {
  const labels = { live: "Live", reconnecting: "Reconnecting" };
  const text = labels[status] || "Offline";
  return el("span", { class: `badge ${status}`, "data-status": status }, text);
}

export async function copyText(text, statusNode) {
  try {
    await navigator.clipboard.writeText(text);
    statusNode.textContent = "Copied.";
  } catch {
    statusNode.textContent = "Copy failed: the browser blocked the clipboard. Select the text and copy it by hand.";
  }
}

// A labelled <select>, with `options` as a list of [value, text] pairs.
export function selectField(label, attrs, options, selected) {
  const select = el("select", attrs,
    options.map(([value, text]) => el("option", { value, selected: value === selected }, text)));
  return { label: el("label", {}, label, select), input: select };
}

// A short date and time in the browser's locale for an ISO 8601 string
// from the API, or "–" for null.
// "1 viewer", "3 viewers": a count with its noun, singular for one.
export function countOf(count, noun) {
  return `${count} ${count === 1 ? noun : `${noun}s`}`;
}

export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

// A table with a header row. Each item of `rows` is an array of cells
// (nodes or text).
export function table(label, columns, rows) {
  return el("div", { class: "table-wrap" },
    el("table", { "aria-label": label },
      el("thead", {}, el("tr", {}, columns.map((name) => el("th", { scope: "col" }, name)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) => el("td", {}, cell)))))));
}

// Turns `panel` into a once-only secret panel: Done or the Escape key
// empties and hides it, and the focus moves to `main` so a keyboard user
// is not left on a removed button. Returns the Done button.
export function closablePanel(panel) {
  const close = () => {
    panel.hidden = true;
    panel.replaceChildren();
    document.getElementById("main").focus();
  };
  panel.onkeydown = (event) => {
    if (event.key === "Escape") close();
  };
  return el("button", { type: "button", onclick: close }, "Done");
}

// Asks the person to confirm an action in a modal <dialog>, in place of the
// browser's confirm(). The focus starts on Cancel, Escape cancels, and when
// the dialog closes the focus returns to the control that opened it, or to
// <main> when that control is gone. Resolves to true when confirmed.
export function confirmAction(message, confirmLabel) {
  const opener = document.activeElement;
  const dialog = el("dialog", { class: "confirm", "aria-labelledby": "confirm-heading", "aria-describedby": "confirm-message" },
    el("h2", { id: "confirm-heading" }, "Are you sure?"),
    el("p", { id: "confirm-message" }, message));
  return new Promise((resolve) => {
    const finish = (confirmed) => {
      dialog.close();
      dialog.remove();
      const target = opener && opener.isConnected && opener !== document.body ? opener : document.getElementById("main");
      target.focus();
      resolve(confirmed);
    };
    const cancel = el("button", { type: "button", onclick: () => finish(false) }, "Cancel");
    const accept = el("button", { type: "button", class: "danger", onclick: () => finish(true) }, confirmLabel);
    dialog.append(el("div", { class: "field-row" }, cancel, accept));
    // Escape fires "cancel" on a modal dialog. The handler closes the dialog
    // itself, so the focus returns as it does after Cancel.
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
