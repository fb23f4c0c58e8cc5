// The admin UI's entry point: a hash router (#/login, #/apps/<id>, ...)
// and the sign-in, apps and streams pages.

import { getToken, request, setToken } from "./api.js";
import { auditPage } from "./audit.js";
import { badge, confirmAction, countOf, el, errorBox, field, showError } from "./dom.js";
import { keysPage } from "./keys.js";
import { profilesPage } from "./profiles.js";
import { recordingsPage } from "./recordings.js";
import { streamPage } from "./stream.js";
import { systemPage } from "./system.js";
import { webhooksPage } from "./webhooks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

// Functions that stop the current page's timers and players; run before
// the next page renders.
let cleanups = [];

export function onLeave(cleanup) {
  cleanups.push(cleanup);
}

function navigate(hash) {
  if (location.hash === hash) {
    render();
  } else {
    location.hash = hash;
  }
}

function renderNav() {
  nav.replaceChildren();
  if (!getToken()) return;
  const logOut = () => {
    setToken(null);
    navigate("#/login");
  };
  // The link of the section on screen is marked for screen readers.
  const current = (href) => (location.hash.startsWith(href) ? "page" : undefined);
  nav.append(
    el("a", { href: "#/apps", "aria-current": current("#/apps") }, "Apps"),
    el("a", { href: "#/audit", "aria-current": current("#/audit") }, "Audit log"),
    el("a", { href: "#/system", "aria-current": current("#/system") }, "System"),
    el("button", { type: "button", class: "link", onclick: logOut }, "Log out"),
  );
}

function page(title, ...sections) {
  document.title = `${title} · RealCast Box`;
  main.replaceChildren(el("h1", {}, title), ...sections);
  main.focus();
}

function setTitle(title) {
  document.title = `${title} · RealCast Box`;
  main.querySelector("h1").textContent = title;
}

function loginPage() {
  const email = field("Email", { type: "email", name: "email", required: true, autocomplete: "username" });
  const password = field("Password", { type: "password", name: "password", required: true, autocomplete: "current-password" });
  const error = errorBox();
  const submit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await logIn(email.input.value, password.input.value);
      navigate("#/apps");
    } catch (exc) {
      showError(error, exc);
    }
  };
  page(
    "Log in",
    el("section", {},
      el("form", { onsubmit: submit },
        email.label, password.label, error,
        el("button", { type: "submit", class: "primary" }, "Log in")),
      el("p", {}, "No account yet? ", el("a", { href: "#/signup" }, "Sign up"))),
  );
}

async function logIn(email, password) {
  const result = await request("POST", "/api/auth/login", { email, password });
  setToken(result.access_token);
}

function signupPage() {
  const name = field("Full name", { name: "full_name", autocomplete: "name" });
  const email = field("Email", { type: "email", name: "email", required: true, autocomplete: "username" });
  const password = field("Password (8 characters or more)", {
    type: "password", name: "password", required: true, minLength: 8, autocomplete: "new-password",
  });
  const error = errorBox();
  const submit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const body = { email: email.input.value, password: password.input.value };
      if (name.input.value) body.full_name = name.input.value;
      await request("POST", "/api/auth/register", body);
      await logIn(body.email, body.password);
      navigate("#/apps");
    } catch (exc) {
      showError(error, exc);
    }
  };
  page(
    "Sign up",
    el("section", {},
      el("form", { onsubmit: submit },
        name.label, email.label, password.label, error,
        el("button", { type: "submit", class: "primary" }, "Sign up")),
      el("p", {}, "Have an account? ", el("a", { href: "#/login" }, "Log in"))),
  );
}

async function appsPage() {
  const list = el("ul", { class: "items", "aria-label": "Apps" });
  const error = errorBox();
  const name = field("Name", { name: "name", required: true, maxLength: 200 });
  const description = field("Description", { name: "description" });
  const createError = errorBox();
  const create = async (event) => {
    event.preventDefault();
    createError.textContent = "";
    try {
      const body = { name: name.input.value };
      if (description.input.value) body.description = description.input.value;
      const app = await request("POST", "/api/apps", body);
      navigate(`#/apps/${app.id}`);
    } catch (exc) {
      showError(createError, exc);
    }
  };
  page(
    "Apps",
    el("section", {}, el("h2", {}, "Your apps"), error, list),
    el("section", {},
      el("h2", {}, "New app"),
      el("form", { onsubmit: create },
        name.label, description.label, createError,
        el("button", { type: "submit", class: "primary" }, "Create app"))),
  );
  try {
    const apps = await request("GET", "/api/apps?limit=100");
    if (apps.length === 0) list.append(el("li", {}, "No apps yet. Create one below."));
    for (const app of apps) {
      list.append(el("li", {}, el("a", { href: `#/apps/${app.id}` }, app.name), app.description));
    }
  } catch (exc) {
    showError(error, exc);
  }
}

async function appPage(appId) {
  const error = errorBox();
  const list = el("ul", { class: "items", "aria-label": "Streams" });
  const title = field("Title", { name: "title", required: true });
  const createError = errorBox();
  const create = async (event) => {
    event.preventDefault();
    createError.textContent = "";
    try {
      const stream = await request("POST", "/api/streams", { app_id: appId, title: title.input.value });
      navigate(`#/streams/${stream.id}`);
    } catch (exc) {
      showError(createError, exc);
    }
  };
  page(
    "App",
    el("nav", { class: "sub", "aria-label": "App" },
      el("a", { href: "#/apps" }, "← All apps"),
      el("a", { href: `#/apps/${appId}/recordings` }, "Recordings"),
      el("a", { href: `#/apps/${appId}/webhooks` }, "Webhooks"),
      el("a", { href: `#/apps/${appId}/profiles` }, "Transcoding profiles"),
      el("a", { href: `#/apps/${appId}/keys` }, "API keys")),
    el("section", {}, el("h2", {}, "Streams"), error, list),
    el("section", {},
      el("h2", {}, "New stream"),
      el("form", { onsubmit: create },
        title.label, createError,
        el("button", { type: "submit", class: "primary" }, "Create stream"))),
  );
  let app;
  try {
    app = await request("GET", `/api/apps/${encodeURIComponent(appId)}`);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  setTitle(app.name);
  main.append(appSettings(app));
  const timer = setInterval(() => refreshStreams(appId, list, error), 5000);
  onLeave(() => clearInterval(timer));
  await refreshStreams(appId, list, error);
}

// The form that renames an app or changes its description, and its
// delete button.
function appSettings(app) {
  const name = field("App name", { name: "app_name", required: true, maxLength: 200, value: app.name });
  const description = field("App description", { name: "app_description", value: app.description || "" });
  const error = errorBox();
  const note = el("p", { "aria-live": "polite" });
  const save = async (event) => {
    event.preventDefault();
    error.textContent = "";
    note.textContent = "";
    try {
      const body = { name: name.input.value, description: description.input.value };
      const updated = await request("PUT", `/api/apps/${app.id}`, body);
      setTitle(updated.name);
      note.textContent = "Saved.";
    } catch (exc) {
      showError(error, exc);
    }
  };
  const remove = async () => {
    const confirmed = await confirmAction(`Delete the app ${app.name}? Its streams and API keys are deleted too, and live publishers are disconnected.`, "Delete app");
    if (!confirmed) return;
    try {
      await request("DELETE", `/api/apps/${app.id}`);
      navigate("#/apps");
    } catch (exc) {
      showError(error, exc);
    }
  };
  return el("section", {},
    el("h2", {}, "App settings"),
    el("form", { onsubmit: save },
      name.label, description.label, error, note,
      el("button", { type: "submit" }, "Save app")),
    el("p", {}, el("button", { type: "button", onclick: remove }, "Delete app")));
}

async function refreshStreams(appId, list, error) {
  if (document.hidden) return;
  try {
    const streams = await request("GET", `/api/streams?app_id=${encodeURIComponent(appId)}&limit=100`);
    const statuses = await Promise.all(
      streams.map((stream) => request("GET", `/api/streams/${stream.id}/status`)),
    );
    const items = streams.map((stream, index) => el("li", {},
      badge(statuses[index].status),
      el("a", { href: `#/streams/${stream.id}` }, stream.title),
      el("span", {}, countOf(statuses[index].viewer_count, "viewer"))));
    if (items.length === 0) items.push(el("li", {}, "No streams yet. Create one below."));
    list.replaceChildren(...items);
    error.textContent = "";
  } catch (exc) {
    showError(error, exc);
  }
}

const ROUTES = [
  [/^#\/login$/, loginPage, false],
  [/^#\/signup$/, signupPage, false],
  [/^#\/apps$/, appsPage, true],
  [/^#\/apps\/([\w-]+)$/, appPage, true],
  [/^#\/apps\/([\w-]+)\/keys$/, (id) => keysPage(id, { page, setTitle }), true],
  [/^#\/apps\/([\w-]+)\/recordings$/, (id) => recordingsPage(id, { page, setTitle, onLeave }), true],
  [/^#\/apps\/([\w-]+)\/webhooks$/, (id) => webhooksPage(id, { page, setTitle, onLeave }), true],
  [/^#\/apps\/([\w-]+)\/profiles$/, (id) => profilesPage(id, { page, setTitle }), true],
  [/^#\/audit$/, () => auditPage({ page }), true],
  [/^#\/system$/, () => systemPage({ page, onLeave }), true],
  [/^#\/streams\/([\w-]+)$/, (id) => streamPage(id, { page, setTitle, onLeave }), true],
];

function render() {
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  renderNav();
  const hash = location.hash || "#/apps";
  for (const [pattern, view, needsToken] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    if (needsToken && !getToken()) {
      navigate("#/login");
      return;
    }
    view(...match.slice(1));
    return;
  }
  page("Page not found", el("p", {}, "This address matches no page. ", el("a", { href: "#/apps" }, "Go to your apps.")));
}

// When a refresh removes the focused control (a deleted item, a redrawn
// list), the browser drops the focus to <body> and a keyboard user starts
// again from the top of the page. The focus moves to <main> in its place.
let lastFocused = null;
document.addEventListener("focusin", (event) => {
  lastFocused = event.target;
});
new MutationObserver(() => {
  if (lastFocused && !lastFocused.isConnected && document.activeElement === document.body) {
    lastFocused = null;
    main.focus({ preventScroll: true });
  }
}).observe(main, { childList: true, subtree: true });

window.addEventListener("hashchange", render);
window.addEventListener("realcast:signed-out", () => navigate("#/login"));
render();
