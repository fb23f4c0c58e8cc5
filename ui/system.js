// The system page: the box's version and free disk space (from /healthz)
// and the H.264 encoders it found at start.

import { request } from "./api.js";
import { el, errorBox, formatBytes, showError, table } from "./dom.js";

const REFRESH_MS = 30000;

export async function systemPage({ page, onLeave }) {
  const error = errorBox();
  const facts = el("dl", { class: "facts" });
  const encoders = el("div", {});
  page(
    "System",
    error,
    el("section", {}, el("h2", {}, "Box"), facts),
    el("section", {}, el("h2", {}, "H.264 encoders"), encoders),
  );

  const refreshHealth = async () => {
    if (document.hidden) return;
    try {
      renderHealth(facts, await request("GET", "/healthz"));
    } catch (exc) {
      showError(error, exc);
    }
  };
  const timer = setInterval(refreshHealth, REFRESH_MS);
  onLeave(() => clearInterval(timer));
  await refreshHealth();

  try {
    const list = await request("GET", "/api/system/encoders");
    const rows = list.map((encoder) => [
      encoder.name,
      encoder.hardware ? "hardware" : "software",
      encoder.available ? "works" : "not available",
      encoder.detail,
    ]);
    encoders.replaceChildren(table("Encoders", ["Encoder", "Kind", "Here", "Detail"], rows));
  } catch (exc) {
    showError(error, exc);
  }
}

function renderHealth(node, health) {
  const free = health.data_disk_free_bytes;
  const total = health.data_disk_total_bytes;
  const percent = free !== null && total ? ` (${Math.round((free / total) * 100)} % of ${formatBytes(total)})` : "";
  node.replaceChildren(
    el("dt", {}, "Version"), el("dd", { id: "box-version" }, health.version),
    el("dt", {}, "Free disk space for data and recordings"),
    el("dd", { id: "disk-free" }, free === null || free === undefined ? "unknown: the data directory cannot be read" : `${formatBytes(free)}${percent}`),
  );
}
