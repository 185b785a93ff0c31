// Drift charts drawn as SVG from the admin drift routes: no charting library, no build step, no inline code.
// Every mark carries data-* attributes (group, window, series) so that tests and screen readers can tell what
// it stands for; colours come from classes in styles.css (the page's CSP allows no style attributes).
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 260;
const MARGIN = { top: 16, right: 32, bottom: 40, left: 48 };
export const GROUP_NAMES = {
  image: "Image statistics", embedding: "Embedding", prediction: "Prediction", confidence: "Confidence",
};
const MAX_CLASSES = 10; // more classes than this over all windows: the rest are drawn as "(other)"
const OTHER = "(other)";

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function title(text) {
  return svg("title", {}, text);
}

function frame(label, width = WIDTH, height = HEIGHT) {
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label,
    class: "chart" });
}

function shortWindow(windowId) {
  // "2026-11-23T13:00Z/PT1H" -> "11-23 13:00"
  const match = /^\d{4}-(\d{2}-\d{2})T(\d{2}:\d{2})Z/.exec(windowId);
  return match ? `${match[1]} ${match[2]}` : windowId;
}

function axes(root, { x0, x1, y0, y1, yTicks, yLabel, xLabels }) {
  root.append(svg("line", { x1: x0, y1: y0, x2: x1, y2: y0, class: "axis" }),
    svg("line", { x1: x0, y1: y0, x2: x0, y2: y1, class: "axis" }));
  for (const [value, y] of yTicks) {
    root.append(svg("line", { x1: x0 - 4, y1: y, x2: x1, y2: y, class: "grid" }),
      svg("text", { x: x0 - 6, y: y + 4, class: "tick", "text-anchor": "end" }, String(value)));
  }
  root.append(svg("text", { x: 12, y: (y0 + y1) / 2, class: "axis-label", "text-anchor": "middle",
    transform: `rotate(-90 12 ${(y0 + y1) / 2})` }, yLabel));
  for (const [text, x] of xLabels) {
    root.append(svg("text", { x, y: y0 + 16, class: "tick", "text-anchor": "middle" }, text));
  }
}

function xLabelsFor(windows, xOf) {
  // at most ~6 labels, always the first and the last window
  const step = Math.max(1, Math.ceil(windows.length / 6));
  return windows.map((window, i) => [i, window])
    .filter(([i]) => i % step === 0 || i === windows.length - 1)
    .map(([i, window]) => [shortWindow(window.window_id), xOf(i)]);
}

/** Drift over time: one line per signal group (-log10 of its smallest p-value), alarms marked. */
export function driftTimelineChart(timeline) {
  const windows = timeline.items;
  const root = frame("Drift over time: evidence of drift per signal group, one point per window");
  const [x0, x1, y0, y1] = [MARGIN.left, WIDTH - MARGIN.right, HEIGHT - MARGIN.bottom, MARGIN.top];
  const alphas = windows.map((w) => w.alpha).filter((a) => typeof a === "number" && a > 0);
  const alarmLevel = alphas.length ? -Math.log10(Math.min(...alphas)) : null;
  const peak = Math.max(1, alarmLevel ?? 0, ...windows.flatMap((w) => Object.values(w.groups).map((g) => g.evidence)));
  const yMax = Math.ceil(peak + 0.5);
  const xOf = (i) => (windows.length === 1 ? (x0 + x1) / 2 : x0 + 12 + (i * (x1 - x0 - 24)) / (windows.length - 1));
  const yOf = (value) => y0 - (value / yMax) * (y0 - y1);
  const ticks = [0, Math.round(yMax / 2), yMax].map((v) => [v, yOf(v)]);
  axes(root, { x0, x1, y0, y1, yTicks: ticks, yLabel: "−log10 p", xLabels: xLabelsFor(windows, xOf) });
  windows.forEach((window, i) => {
    if (!window.drift) return;
    root.append(svg("rect", { x: xOf(i) - 10, y: y1, width: 20, height: y0 - y1, class: "alarm",
      "data-window": window.window_key }, title(`Drift alarm in ${window.window_id}: ${window.signals.join(", ")}`)));
  });
  if (alarmLevel !== null) {
    root.append(svg("line", { x1: x0, y1: yOf(alarmLevel), x2: x1, y2: yOf(alarmLevel), class: "alarm-level",
      "stroke-dasharray": "6 4" }, title(`Alarm level: p < ${Math.min(...alphas).toPrecision(2)}`)));
  }
  for (const group of timeline.groups) {
    const points = windows.map((window, i) => [i, window.groups[group]]).filter(([, point]) => point);
    const line = svg("polyline", { class: `line group-${group}`, "data-group": group, "data-points": points.length,
      fill: "none", points: points.map(([i, point]) => `${xOf(i)},${yOf(point.evidence)}`).join(" ") });
    root.append(line);
    for (const [i, point] of points) {
      root.append(svg("circle", { cx: xOf(i), cy: yOf(point.evidence), r: point.drifted ? 5 : 3,
        class: `point group-${group}${point.drifted ? " drifted" : ""}`, "data-group": group,
        "data-window": windows[i].window_key },
      title(`${GROUP_NAMES[group]} in ${windows[i].window_id}: p = ${point.p_value.toPrecision(3)}` +
        `${point.drifted ? " (drifted)" : ""}`)));
    }
  }
  return root;
}

/** Current vs reference histograms (as shares of each side) for one window: one panel per column. */
export function histogramChart(data) {
  const panelWidth = WIDTH / 2;
  const root = frame(`Confidence and brightness in ${data.window_id}: this window against the reference`);
  data.histograms.forEach((histogram, panel) => {
    const left = panel * panelWidth;
    const [x0, x1, y0, y1] = [left + MARGIN.left, left + panelWidth - MARGIN.right, HEIGHT - MARGIN.bottom,
      MARGIN.top + 14];
    const totals = { reference: histogram.reference.reduce((a, b) => a + b, 0) || 1,
      current: histogram.current.reduce((a, b) => a + b, 0) || 1 };
    const shares = { reference: histogram.reference.map((n) => n / totals.reference),
      current: histogram.current.map((n) => n / totals.current) };
    const top = Math.max(0.05, ...shares.reference, ...shares.current);
    const yOf = (share) => y0 - (share / top) * (y0 - y1);
    const bins = histogram.current.length;
    const binWidth = (x1 - x0) / bins;
    const xOf = (edge) => x0 + ((edge - histogram.edges[0]) / (histogram.edges[bins] - histogram.edges[0])) * (x1 - x0);
    root.append(svg("text", { x: (x0 + x1) / 2, y: MARGIN.top + 4, class: "panel-title", "text-anchor": "middle" },
      histogram.column));
    axes(root, { x0, x1, y0, y1, yTicks: [[0, yOf(0)], [`${Math.round(top * 100)}%`, yOf(top)]],
      yLabel: panel === 0 ? "share" : "", xLabels: [0, bins / 2, bins].map((i) => [String(histogram.edges[i]),
        xOf(histogram.edges[i])]) });
    ["reference", "current"].forEach((series, s) => {
      shares[series].forEach((share, i) => {
        const height = y0 - yOf(share);
        root.append(svg("rect", { x: x0 + i * binWidth + 1 + s * (binWidth - 2) / 2, y: y0 - height,
          width: Math.max(1, (binWidth - 2) / 2), height, class: `bar ${series}`, "data-series": series,
          "data-column": histogram.column, "data-bin": i },
        title(`${histogram.column} ${histogram.edges[i]}–${histogram.edges[i + 1]}: ${series} ` +
          `${histogram[series][i]} (${Math.round(share * 100)}%)`)));
      });
    });
  });
  return root;
}

/** The classes drawn in the share chart: the most predicted overall, the rest as "(other)". */
export function shareClasses(windows) {
  const totals = new Map();
  for (const window of windows) {
    for (const [label, count] of Object.entries(window.class_counts)) totals.set(label, (totals.get(label) ?? 0) + count);
  }
  const ranked = [...totals.entries()].filter(([label]) => label !== OTHER).sort((a, b) => b[1] - a[1] ||
    a[0].localeCompare(b[0]));
  const kept = ranked.slice(0, MAX_CLASSES).map(([label]) => label);
  const hasOther = ranked.length > MAX_CLASSES || totals.has(OTHER);
  return hasOther ? [...kept, OTHER] : kept;
}

/** The share of predictions per class over time: one stacked bar per window that has predictions. */
export function classShareChart(timeline) {
  const windows = timeline.items.filter((w) => Object.keys(w.class_counts).length);
  const classes = shareClasses(windows);
  const root = frame("Share of predictions per class, one stacked bar per window", WIDTH, HEIGHT + 24 * Math.ceil(
    classes.length / 4));
  const [x0, x1, y0, y1] = [MARGIN.left, WIDTH - MARGIN.right, HEIGHT - MARGIN.bottom, MARGIN.top];
  const slot = (x1 - x0) / Math.max(1, windows.length);
  const xOf = (i) => x0 + slot * i + slot / 2;
  const yOf = (share) => y0 - share * (y0 - y1);
  axes(root, { x0, x1, y0, y1, yTicks: [[0, yOf(0)], ["50%", yOf(0.5)], ["100%", yOf(1)]], yLabel: "share",
    xLabels: xLabelsFor(windows, xOf) });
  windows.forEach((window, i) => {
    const total = Object.values(window.class_counts).reduce((a, b) => a + b, 0) || 1;
    const counts = new Map(classes.map((label) => [label, 0]));
    for (const [label, count] of Object.entries(window.class_counts)) {
      const key = counts.has(label) ? label : OTHER;
      counts.set(key, (counts.get(key) ?? 0) + count);
    }
    let stacked = 0;
    const bar = svg("g", { class: "stack", "data-window": window.window_key });
    classes.forEach((label, c) => {
      const share = counts.get(label) / total;
      if (!share) return;
      bar.append(svg("rect", { x: xOf(i) - Math.min(28, slot * 0.35), y: yOf(stacked + share),
        width: Math.min(56, slot * 0.7), height: yOf(stacked) - yOf(stacked + share), class: `segment c${c}`,
        "data-class": label, "data-window": window.window_key },
      title(`${label} in ${window.window_id}: ${counts.get(label)} of ${total} (${Math.round(share * 100)}%)`)));
      stacked += share;
    });
    root.append(bar);
  });
  classes.forEach((label, c) => {
    const x = x0 + (c % 4) * ((x1 - x0) / 4);
    const y = HEIGHT + 24 * Math.floor(c / 4) - 8;
    root.append(svg("rect", { x, y: y - 10, width: 12, height: 12, class: `segment c${c}` }),
      svg("text", { x: x + 16, y, class: "legend" }, label.length > 26 ? `${label.slice(0, 25)}…` : label));
  });
  return root;
}

/** A legend for the timeline's groups (an HTML list, so it wraps and reads well). */
export function timelineLegend(groups, document_ = document) {
  const list = document_.createElement("ul");
  list.className = "chart-legend";
  for (const group of groups) {
    const item = document_.createElement("li");
    const swatch = document_.createElement("span");
    swatch.className = `swatch group-${group}`;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, GROUP_NAMES[group] ?? group);
    list.append(item);
  }
  const alarm = document_.createElement("li");
  const swatch = document_.createElement("span");
  swatch.className = "swatch alarm";
  swatch.setAttribute("aria-hidden", "true");
  alarm.append(swatch, "Drift alarm (window); dashed: alarm level");
  list.append(alarm);
  return list;
}
