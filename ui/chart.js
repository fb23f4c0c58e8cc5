// A line chart of viewers and ingest bitrate over the current session, in
// inline SVG. The API keeps no history of either, so the chart plots the
// samples the page takes from the status endpoint while it is open: it
// starts empty on each visit, and a gap in the polling is a straight line.

import { countOf, el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 160;
const PAD = { left: 44, right: 52, top: 10, bottom: 22 };
// About 30 minutes at one sample every 3 seconds.
const MAX_SAMPLES = 600;

function formatSpan(milliseconds) {
  const seconds = Math.round(milliseconds / 1000);
  if (seconds < 120) return `${seconds} s`;
  return `${(seconds / 60).toFixed(1)} min`;
}

function svgNode(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export class SessionChart {
  constructor() {
    this.samples = [];
    this.session = null;
    this.svg = svgNode("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart",
      "aria-labelledby": "chart-summary",
    });
    // Hidden until the first sample, so an offline stream shows no empty box.
    this.svg.style.display = "none";
    this.summary = el("p", { id: "chart-summary" }, "No samples yet: the chart fills while the stream is live.");
    this.section = el("section", { "aria-labelledby": "chart-heading" },
      el("h2", { id: "chart-heading" }, "Viewers and bitrate"),
      el("p", { class: "legend" },
        el("span", { class: "key viewers" }, "Viewers (left scale)"), " ",
        el("span", { class: "key bitrate" }, "Ingest bitrate in kbps (right scale)")),
      this.svg,
      this.summary);
  }

  // Adds one status response from /api/streams/{id}/status. A new
  // started_at is a new session, which clears the chart.
  add(status) {
    const live = status.status === "live" || status.status === "reconnecting";
    if (!live) return;
    if (status.started_at !== this.session) {
      this.session = status.started_at;
      this.samples = [];
    }
    this.samples.push({
      time: Date.now(),
      viewers: status.viewer_count,
      kbps: status.ingest?.bitrate_kbps ?? null,
    });
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
    this.draw();
  }

  draw() {
    const samples = this.samples;
    this.svg.style.display = "";
    const first = samples[0].time;
    const span = Math.max(samples[samples.length - 1].time - first, 1);
    const maxViewers = Math.max(1, ...samples.map((sample) => sample.viewers));
    const maxKbps = Math.max(1, ...samples.map((sample) => sample.kbps ?? 0));
    const plotWidth = WIDTH - PAD.left - PAD.right;
    const plotHeight = HEIGHT - PAD.top - PAD.bottom;
    const x = (time) => PAD.left + ((time - first) / span) * plotWidth;
    const y = (value, max) => PAD.top + plotHeight - (value / max) * plotHeight;
    const line = (key, max) => samples
      .filter((sample) => sample[key] !== null)
      .map((sample) => `${x(sample.time).toFixed(1)},${y(sample[key], max).toFixed(1)}`)
      .join(" ");

    const bottom = PAD.top + plotHeight;
    const elapsed = formatSpan(samples[samples.length - 1].time - first);
    this.svg.replaceChildren(
      svgNode("line", { x1: PAD.left, y1: bottom, x2: WIDTH - PAD.right, y2: bottom, class: "axis" }),
      svgNode("text", { x: PAD.left - 6, y: PAD.top + 10, "text-anchor": "end", class: "viewers" }, maxViewers),
      svgNode("text", { x: PAD.left - 6, y: bottom, "text-anchor": "end", class: "viewers" }, 0),
      svgNode("text", { x: WIDTH - PAD.right + 6, y: PAD.top + 10, class: "bitrate" }, maxKbps),
      svgNode("text", { x: WIDTH - PAD.right + 6, y: bottom, class: "bitrate" }, 0),
      svgNode("text", { x: WIDTH - PAD.right, y: HEIGHT - 4, "text-anchor": "end" }, elapsed),
      svgNode("polyline", { points: line("viewers", maxViewers), class: "viewers" }),
      svgNode("polyline", { points: line("kbps", maxKbps), class: "bitrate" }),
    );
    const latest = samples[samples.length - 1];
    const kbps = latest.kbps === null ? "not measured yet" : `${latest.kbps} kbps`;
    const peakViewers = Math.max(...samples.map((sample) => sample.viewers));
    const peakKbps = Math.max(0, ...samples.map((sample) => sample.kbps ?? 0));
    this.summary.textContent = `Over the last ${elapsed} (${samples.length} samples): ` +
      `now ${countOf(latest.viewers, "viewer")} and ${kbps}; at most ${countOf(peakViewers, "viewer")} and ${peakKbps} kbps.`;
  }
}
