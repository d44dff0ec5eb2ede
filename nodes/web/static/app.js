// les02-flow web console: plain JavaScript, no libraries, no build step.
// Live data comes from /ws (a summary at most update_rate times a second), rides from /api.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  const SVGNS = "http://www.w3.org/2000/svg";
  const MAX_DEBUG = 200;

  const state = {
    graph: { nodes: [] },
    stats: null,
    history: 60,
    updateRate: 20,
    store: false,
    points: { master: [], slave: [] },
    last: {},
    lastRecv: 0,
    marks: [],
    ride: null,
    mismatch: null,
    speed: null,
    floors: [],
    floorsFrom: null,
    resolution: 1,
    rides: [],
    liveRides: [],
    selectedRide: null,
    debugPaused: false,
    debugHeld: [],
    debugTypes: {},
    debugSampleAt: {},
    knownNodes: new Set(),
    lifts: new Map(),  // "site\u0000source" -> row (server-side bounded; gone rows removed)
    liftsEvicted: 0,
    liftsDirty: false,
    dirty: true,
    fps: 0,
  };
  // for tests and the benchmark
  window.__console = state;

  function api(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    return fetch(path, { headers, cache: "no-store" }).then((r) => {
      if (!r.ok) return r.json().then((b) => Promise.reject(new Error(b.error || r.statusText)));
      return r.json();
    });
  }
  function withToken(path) {
    return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
  }

  // -- formatting ---------------------------------------------------------------------------
  const fmt1 = (x) => (x == null || isNaN(x) ? "–" : x.toLocaleString("en", { maximumFractionDigits: 1, minimumFractionDigits: 1 }));
  const fmt0 = (x) => (x == null || isNaN(x) ? "–" : Math.round(x).toLocaleString("en"));
  function rate(x) {
    if (!x) return "0";
    return x >= 1000 ? (x / 1000).toFixed(1) + "k" : x >= 10 ? Math.round(x) + "" : x.toFixed(1);
  }
  function clock(ts) {
    const d = new Date(ts * 1000);
    return d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }
  function dateTime(ts) {
    const d = new Date(ts * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  function floorOf(mm) {
    const f = state.floors;
    if (!f.length || mm == null) return null;
    let best = 0;
    for (let i = 1; i < f.length; i++) if (Math.abs(f[i] - mm) < Math.abs(f[best] - mm)) best = i;
    return Math.abs(f[best] - mm) < 100 ? best : null;
  }
  function posLabel(mm) {
    const f = floorOf(mm);
    return (f == null ? "" : "F" + f + " ") + fmt0(mm) + " mm";
  }
  function el(tag, attrs, parent, ns) {
    const e = ns ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    if (parent) parent.appendChild(e);
    return e;
  }

  // -- flow view ------------------------------------------------------------------------------
  const NODE_W = 176, NODE_H = 64, GAP_X = 70, GAP_Y = 18, PAD = 12;

  function layout(nodes) {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const incoming = new Map(nodes.map((n) => [n.id, []]));
    for (const n of nodes) for (const port in n.wires) for (const t of n.wires[port]) if (incoming.has(t)) incoming.get(t).push(n.id);
    const col = new Map();
    const depth = (id, seen) => {
      if (col.has(id)) return col.get(id);
      if (seen.has(id)) return 0;
      seen.add(id);
      let d = 0;
      for (const u of incoming.get(id) || []) d = Math.max(d, depth(u, seen) + 1);
      col.set(id, d);
      return d;
    };
    for (const n of nodes) depth(n.id, new Set());
    // a sink with no input wires sits right of everything it could be fed by: leave it at 0
    const columns = [];
    for (const n of nodes) {
      const c = col.get(n.id);
      (columns[c] = columns[c] || []).push(n);
    }
    // order each column by the mean row of its inputs (fewer crossings)
    const row = new Map();
    columns.forEach((list, c) => {
      if (c > 0) {
        list.sort((a, b) => {
          const m = (n) => {
            const ins = incoming.get(n.id).filter((u) => row.has(u));
            return ins.length ? ins.reduce((s, u) => s + row.get(u), 0) / ins.length : 1e9;
          };
          return m(a) - m(b);
        });
      }
      list.forEach((n, i) => row.set(n.id, i));
    });
    const pos = new Map();
    const tallest = Math.max(1, ...columns.map((l) => (l ? l.length : 0)));
    const height = tallest * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD;
    columns.forEach((list, c) => {
      const h = list.length * (NODE_H + GAP_Y) - GAP_Y;
      const top = (height - h) / 2;
      list.forEach((n, i) => pos.set(n.id, { x: PAD + c * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) }));
    });
    return { pos, width: PAD * 2 + columns.length * (NODE_W + GAP_X) - GAP_X, height, byId };
  }

  function renderFlow() {
    const svg = $("flow");
    const nodes = state.graph.nodes || [];
    const { pos, width, height } = layout(nodes);
    svg.textContent = "";
    svg.setAttribute("width", Math.max(width, 200));
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${Math.max(width, 200)} ${height}`);
    const wires = el("g", { class: "wires" }, svg, true);
    for (const n of nodes) {
      const a = pos.get(n.id);
      const ports = Object.keys(n.wires);
      ports.forEach((port, pi) => {
        for (const t of n.wires[port]) {
          const b = pos.get(t);
          if (!b) continue;
          const y1 = a.y + NODE_H / 2 + (ports.length > 1 ? (pi - (ports.length - 1) / 2) * 14 : 0);
          const x1 = a.x + NODE_W, x2 = b.x, y2 = b.y + NODE_H / 2;
          const dx = Math.max(30, (x2 - x1) / 2);
          el("path", { class: "wire", "data-from": n.id, "data-to": t, d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}` }, wires, true);
          if (port !== "out") el("text", { class: "port", x: x1 + 6, y: y1 - 4, text: port }, wires, true);
        }
      });
    }
    // nodes that meet on a CAN bus (les02_sim sends, can_source reads the same channel)
    for (const a of nodes) {
      if (a.type !== "les02_sim" && a.type !== "uds_sim") continue;
      for (const b of nodes) {
        if (b.type !== "can_source" || b.config.channel !== a.config.channel || b.config.interface !== a.config.interface) continue;
        const pa = pos.get(a.id), pb = pos.get(b.id);
        const x1 = pa.x + NODE_W / 2, y1 = pa.y + NODE_H, x2 = pb.x + NODE_W / 2, y2 = pb.y;
        if (pa.x === pb.x) {
          el("path", { class: "wire bus", d: `M${x1},${pa.y < pb.y ? y1 : pa.y} L${x2},${pa.y < pb.y ? y2 : pb.y + NODE_H}` }, wires, true);
          el("text", { class: "port", x: x1 + 6, y: (Math.min(pa.y, pb.y) + NODE_H + Math.max(pa.y, pb.y)) / 2 + 3, text: "CAN " + a.config.channel }, wires, true);
        }
      }
    }
    const fresh = state.knownNodes.size > 0;
    for (const n of nodes) {
      const p = pos.get(n.id);
      const g = el("g", { class: "node " + n.role, "data-node": n.id, "data-type": n.type, transform: `translate(${p.x},${p.y})` }, svg, true);
      if (fresh && !state.knownNodes.has(n.id)) g.classList.add("added");
      el("title", { text: `${n.id} (${n.type})\n${n.summary}\n${n.location}` }, g, true);
      el("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 6 }, g, true);
      el("rect", { class: "band", width: 6, height: NODE_H, rx: 3 }, g, true);
      el("text", { class: "id", x: 16, y: 20, text: n.label || n.id }, g, true);
      el("text", { class: "type", x: 16, y: 36, text: n.type }, g, true);
      el("text", { class: "rate", x: 16, y: 54, text: "" }, g, true);
      el("circle", { class: "status", cx: NODE_W - 12, cy: 14, r: 5 }, g, true);
      el("g", { class: "badges" }, g, true);
    }
    state.knownNodes = new Set(nodes.map((n) => n.id));
    $("flow-name").textContent = state.graph.name ? `${state.graph.name} · ${state.graph.path || ""}` : "";
    $("flow-rev").textContent = state.graph.revision ? `re-deployed ${state.graph.revision}×` : "";
    updateFlowStats();
  }

  function badge(parent, cls, text, x) {
    const g = el("g", { class: "badge " + cls, transform: `translate(${x},${NODE_H - 22})` }, parent, true);
    const w = 8 + text.length * 6;
    el("rect", { width: w, height: 15, x: -w, rx: 7 }, g, true);
    el("text", { x: -w / 2, y: 11, "text-anchor": "middle", text }, g, true);
    return w + 4;
  }

  function updateFlowStats() {
    const s = state.stats;
    if (!s) return;
    for (const g of $("flow").querySelectorAll("g.node")) {
      const id = g.getAttribute("data-node");
      const c = s.counters[id] || {};
      const r = s.rates[id] || {};
      const st = s.statuses[id] || {};
      g.setAttribute("data-in", c.in || 0);
      g.setAttribute("data-out", c.out || 0);
      g.setAttribute("data-dropped", c.dropped || 0);
      g.setAttribute("data-errors", c.errors || 0);
      const role = g.classList.contains("source") ? "source" : g.classList.contains("sink") ? "sink" : "transform";
      const parts = [];
      if (role !== "source") parts.push("in " + rate(r.in) + "/s");
      if (role !== "sink" || c.out) parts.push("out " + rate(r.out) + "/s");
      g.querySelector("text.rate").textContent = parts.join("  ·  ");
      const dot = g.querySelector("circle.status");
      let cls = st.finished ? "finished" : st.state || "ok";
      if (!st.finished && st.state === "ok" && !(r.in || r.out)) cls = "idle";
      dot.setAttribute("class", "status " + cls);
      dot.setAttribute("data-state", st.state || "");
      const tip = g.querySelector("title");
      const n = (state.graph.nodes || []).find((x) => x.id === id);
      if (tip && n) {
        const extra = Object.entries(c).map(([k, v]) => `${k}=${v}`).join(" ");
        tip.textContent = `${n.id} (${n.type})\n${n.summary}\n${n.location}\n${extra}${st.text ? "\nstatus: " + st.text : ""}`;
      }
      const badges = g.querySelector("g.badges");
      badges.textContent = "";
      let x = NODE_W - 6;
      if (c.errors) x -= badge(badges, "err", "err " + rate(c.errors), x);
      if (c.dropped) badge(badges, "drop", "drop " + rate(c.dropped), x);
    }
    for (const w of $("flow").querySelectorAll("path.wire")) {
      const r = s.rates[w.getAttribute("data-from")] || {};
      w.classList.toggle("busy", (r.out || 0) > 0);
    }
    const lag = s.loop_lag_ms != null ? ` · loop lag ${s.loop_lag_ms.toFixed(1)} ms` : "";
    $("meta").textContent = `${s.clients} browser${s.clients === 1 ? "" : "s"}${lag}`;
  }

  // -- lift view -------------------------------------------------------------------------------
  function addPoint(ch, ts, raw) {
    const pts = state.points[ch] || (state.points[ch] = []);
    if (pts.length && ts < pts[pts.length - 1][0]) pts.length = 0; // time went back (replay restart)
    pts.push([ts, raw]);
    const limit = ts - state.history;
    let cut = 0;
    while (cut < pts.length && pts[cut][0] < limit) cut++;
    if (cut > 64 || (cut && pts.length > 4000)) pts.splice(0, cut);
  }

  function setText(id, text) {
    const e = $(id);
    if (e.textContent !== text) e.textContent = text;
    return e;
  }

  function updateReadouts() {
    for (const ch of ["master", "slave"]) {
      const span = $("pos-" + ch);
      const last = state.last[ch];
      if (!last) continue;
      span.setAttribute("data-raw", last[1]);
      span.setAttribute("data-ts", last[0]);
      setText("pos-" + ch, posLabel(last[1] * state.resolution));
    }
    setText("speed", state.speed == null ? "–" : fmt0(state.speed) + " mm/s");
    const ride = state.ride;
    setText("ride-now", ride
      ? `${ride.direction === "up" ? "▲ up" : "▼ down"} from ${posLabel(ride.position_mm)} · ${(lastTs() - ride.start_ts).toFixed(1)} s`
      : "standing");
    const m = $("mismatch-now");
    if (state.mismatch) {
      m.textContent = `mismatch ${fmt0(state.mismatch.max_diff_mm)} mm`;
      m.className = "bad";
    } else {
      m.textContent = "agree";
      m.className = "ok";
    }
    setText("floors-from", state.floorsFrom ? `floors from ${state.floorsFrom}` : "");
  }

  function lastTs() {
    let t = 0;
    for (const ch in state.last) t = Math.max(t, state.last[ch][0]);
    return t;
  }

  const sizes = new Map();  // canvas -> [w, h], measured again only after a resize
  window.addEventListener("resize", () => sizes.clear());
  function fitCanvas(c) {
    const dpr = window.devicePixelRatio || 1;
    let size = sizes.get(c);
    if (!size) {
      size = [Math.max(100, Math.floor(c.clientWidth)), Math.max(50, Math.floor(c.clientHeight))];
      sizes.set(c, size);
    }
    const [w, h] = size;
    if (c.width !== Math.floor(w * dpr)) {
      c.width = Math.floor(w * dpr);
      c.height = Math.floor(h * dpr);
      c.style.height = h + "px";
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx, w, h };
  }

  function range() {
    let lo = Infinity, hi = -Infinity;
    for (const f of state.floors) { lo = Math.min(lo, f); hi = Math.max(hi, f); }
    for (const ch in state.points) for (const p of state.points[ch]) { const mm = p[1] * state.resolution; lo = Math.min(lo, mm); hi = Math.max(hi, mm); }
    if (!isFinite(lo)) { lo = 0; hi = 1000; }
    if (hi - lo < 500) { const m = (hi + lo) / 2; lo = m - 250; hi = m + 250; }
    const pad = (hi - lo) * 0.06;
    return [lo - pad, hi + pad];
  }

  function drawShaft() {
    const c = $("shaft");
    const { ctx, w, h } = fitCanvas(c);
    ctx.clearRect(0, 0, w, h);
    const [lo, hi] = range();
    const y = (mm) => h - 10 - ((mm - lo) / (hi - lo)) * (h - 20);
    // shaft walls
    ctx.strokeStyle = "#33445a";
    ctx.lineWidth = 2;
    ctx.strokeRect(46, 4, w - 58, h - 8);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    state.floors.forEach((f, i) => {
      const yy = y(f);
      ctx.strokeStyle = "#2d3b4d";
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(46, yy); ctx.lineTo(w - 12, yy); ctx.stroke();
      ctx.fillStyle = "#7f8fa3";
      ctx.fillText("F" + i, 8, yy);
      ctx.fillStyle = "#55667a";
      ctx.fillText((f / 1000).toFixed(1) + "m", 8, yy + 12);
    });
    const last = state.last.master || state.last.slave;
    if (last) {
      const mm = last[1] * state.resolution;
      const cy = y(mm);
      const carH = Math.min(34, Math.max(18, (h - 20) / Math.max(6, state.floors.length * 1.6)));
      ctx.fillStyle = state.ride ? "#4fa3ff" : "#3a6ea5";
      ctx.strokeStyle = "#9cc9ff";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.roundRect(54, cy - carH, w - 74, carH, 3);
      ctx.fill(); ctx.stroke();
      // cables
      ctx.strokeStyle = "#55667a";
      ctx.beginPath(); ctx.moveTo(w / 2 + 14, 4); ctx.lineTo(w / 2 + 14, cy - carH); ctx.stroke();
      if (state.ride) {
        ctx.fillStyle = "#fff";
        ctx.textAlign = "center";
        ctx.fillText(state.ride.direction === "up" ? "▲" : "▼", 54 + (w - 74) / 2, cy - carH / 2);
        ctx.textAlign = "left";
      }
    }
  }

  function drawChart() {
    const c = $("chart");
    const { ctx, w, h } = fitCanvas(c);
    ctx.clearRect(0, 0, w, h);
    const left = 58, right = 10, top = 10, bottom = 22;
    const pw = w - left - right, ph = h - top - bottom;
    let tEnd = lastTs();
    if (!tEnd) {
      ctx.fillStyle = "#7f8fa3";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText("waiting for position samples…", left + 10, top + ph / 2);
      return;
    }
    const tStart = tEnd - state.history;
    const [lo, hi] = range();
    const X = (t) => left + ((t - tStart) / state.history) * pw;
    const Y = (mm) => top + ph - ((mm - lo) / (hi - lo)) * ph;
    // grid + axis labels
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#7f8fa3";
    ctx.strokeStyle = "#222d3a";
    ctx.lineWidth = 1;
    const step = niceStep((hi - lo) / 4);
    ctx.textBaseline = "middle";
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const yy = Y(v);
      ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + pw, yy); ctx.stroke();
      ctx.fillText((v / 1000).toFixed(step < 1000 ? 1 : 0) + " m", 6, yy);
    }
    ctx.textBaseline = "alphabetic";
    const tStep = state.history > 120 ? 30 : state.history > 30 ? 10 : 5;
    for (let s = 0; s <= state.history; s += tStep) {
      const xx = X(tEnd - s);
      ctx.beginPath(); ctx.moveTo(xx, top); ctx.lineTo(xx, top + ph); ctx.stroke();
      ctx.fillText(s === 0 ? "now" : "-" + s + " s", xx - (s === 0 ? 22 : 12), h - 6);
    }
    // marks: mismatch spans, dropouts, ride start/end
    for (const m of state.marks) {
      const p = m.payload || {};
      if (m.type === "channel_mismatch") {
        const a = p.start_ts, b = p.end_ts == null ? tEnd : p.end_ts;
        if (b < tStart) continue;
        ctx.fillStyle = "rgba(250, 82, 82, 0.22)";
        ctx.fillRect(Math.max(X(a), left), top, Math.max(X(b) - Math.max(X(a), left), 2), ph);
      } else if (m.type === "dropout") {
        if (p.end_ts < tStart) continue;
        ctx.fillStyle = "rgba(250, 82, 82, 0.6)";
        ctx.fillRect(Math.max(X(p.start_ts), left), top + ph - 14, Math.max(X(p.end_ts) - X(p.start_ts), 2), 14);
      } else if (m.type === "ride_start" || m.type === "ride_end") {
        const t = m.type === "ride_start" ? p.start_ts : p.end_ts;
        if (t == null || t < tStart) continue;
        ctx.strokeStyle = "rgba(173, 181, 189, 0.5)";
        ctx.setLineDash([4, 4]);
        ctx.beginPath(); ctx.moveTo(X(t), top); ctx.lineTo(X(t), top + ph); ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, pw, ph); ctx.clip();
    for (const [ch, color] of [["slave", "#ffa94d"], ["master", "#4fa3ff"]]) {
      const pts = state.points[ch] || [];
      ctx.strokeStyle = color;
      ctx.lineWidth = ch === "master" ? 2 : 1.5;
      ctx.beginPath();
      let started = false;
      let prevT = 0;
      for (const [t, raw] of pts) {
        if (t < tStart - 1) continue;
        const xx = X(t), yy = Y(raw * state.resolution);
        // a gap in the data (silent LES02, dropout) is a gap in the line
        if (!started || t - prevT > 1.5) ctx.moveTo(xx, yy);
        else ctx.lineTo(xx, yy);
        started = true;
        prevT = t;
      }
      ctx.stroke();
    }
    ctx.restore();
  }

  function niceStep(x) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(x, 1e-9))));
    const f = x / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
  }

  // -- rides -------------------------------------------------------------------------------------
  function loadRides(tries) {
    if (!state.store) { renderRides(); return; }
    api("/api/rides?limit=50").then((doc) => {
      state.rides = doc.rides;
      $("rides-note").textContent = `${doc.rides.length} latest from the store`;
      renderRides();
      const missing = state.liveRides.some((r) => !state.rides.some((s) => s.ride_id === r.ride_id));
      if (missing && tries > 0) setTimeout(() => loadRides(tries - 1), 700);
    }).catch((e) => { $("rides-note").textContent = "store: " + e.message; });
  }

  function allRides() {
    const seen = new Set(state.rides.map((r) => r.ride_id));
    const live = state.liveRides.filter((r) => !seen.has(r.ride_id)).map((r) => Object.assign({ live: true }, r));
    return live.concat(state.rides).sort((a, b) => b.start_ts - a.start_ts).slice(0, 100);
  }

  function renderRides() {
    const body = $("rides-body");
    const rides = allRides();
    body.textContent = "";
    if (!rides.length) {
      el("td", { colspan: 8, text: state.store ? "no rides yet" : "no rides yet (no store configured: live rides only)" }, el("tr", { class: "empty" }, body));
      return;
    }
    for (const r of rides) {
      const tr = el("tr", { "data-ride": r.ride_id }, body);
      if (r.ride_id === state.selectedRide) tr.classList.add("selected");
      el("td", { text: dateTime(r.start_ts) }, tr);
      el("td", { class: r.direction, text: r.direction === "up" ? "▲ up" : "▼ down" }, tr);
      el("td", { text: `${posLabel(r.start_position_mm)} → ${posLabel(r.end_position_mm)}` }, tr);
      el("td", { class: "r", text: fmt0(r.distance_mm) + " mm" }, tr);
      el("td", { class: "r", text: r.duration_s.toFixed(2) + " s" }, tr);
      el("td", { class: "r", text: fmt0(r.max_speed_mm_s) + " mm/s" }, tr);
      const complete = r.complete === true ? ["yes", "✓"] : r.complete === false ? ["no", "✗ " + (r.reason || "")] : ["", "–"];
      el("td", { class: complete[0], text: complete[1] }, tr);
      const dl = el("td", {}, tr);
      if (!r.live && state.store) {
        el("a", { href: withToken(`/api/rides/${encodeURIComponent(r.ride_id)}/export.csv`), download: "", text: "CSV" }, dl);
        el("a", { href: withToken(`/api/rides/${encodeURIComponent(r.ride_id)}/export.json`), download: "", text: "JSON" }, dl);
      } else if (r.live) {
        dl.textContent = state.store ? "saving…" : "";
      }
      tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") selectRide(r); });
    }
  }

  function selectRide(r) {
    state.selectedRide = r.ride_id;
    for (const tr of $("rides-body").querySelectorAll("tr")) tr.classList.toggle("selected", tr.getAttribute("data-ride") === r.ride_id);
    $("ride-title").textContent = `${dateTime(r.start_ts)} · ${r.direction} ${fmt0(r.distance_mm)} mm in ${r.duration_s.toFixed(2)} s · ${r.ride_id.slice(0, 8)}`;
    if (!state.store) { $("ride-title").textContent += " (no store: no samples)"; return; }
    api(`/api/rides/${encodeURIComponent(r.ride_id)}/samples`).then((doc) => drawRide(doc)).catch((e) => { $("ride-title").textContent = e.message; });
  }

  function speedSeries(pts) {
    // least-squares slope over a 0.2 s window, like ride_detect
    const out = [];
    let j = 0;
    for (let i = 0; i < pts.length; i++) {
      while (pts[i][0] - pts[j][0] > 0.2) j++;
      const n = i - j + 1;
      if (n < 3) continue;
      let st = 0, sp = 0;
      for (let k = j; k <= i; k++) { st += pts[k][0]; sp += pts[k][1]; }
      const mt = st / n, mp = sp / n;
      let num = 0, den = 0;
      for (let k = j; k <= i; k++) { const dt = pts[k][0] - mt; num += dt * (pts[k][1] - mp); den += dt * dt; }
      if (den > 0) out.push([pts[i][0], num / den]);
    }
    return out;
  }

  function drawRide(doc) {
    const c = $("ride-chart");
    c.setAttribute("data-samples", doc.samples.length);
    c.setAttribute("data-ride", doc.ride.ride_id);
    const { ctx, w, h } = fitCanvas(c);
    ctx.clearRect(0, 0, w, h);
    const by = { master: [], slave: [] };
    for (const s of doc.samples) (by[s.channel] || (by[s.channel] = [])).push([s.ts, s.position_mm]);
    const all = doc.samples;
    if (!all.length) { ctx.fillStyle = "#7f8fa3"; ctx.fillText("no samples stored for this ride", 20, 30); return; }
    const t0 = all[0].ts, t1 = all[all.length - 1].ts;
    let lo = Infinity, hi = -Infinity;
    for (const s of all) { lo = Math.min(lo, s.position_mm); hi = Math.max(hi, s.position_mm); }
    if (hi - lo < 10) { hi += 5; lo -= 5; }
    const speed = speedSeries(by.master.length ? by.master : by.slave);
    let vmax = 1;
    for (const v of speed) vmax = Math.max(vmax, Math.abs(v[1]));
    const left = 58, right = 62, top = 10, bottom = 22;
    const pw = w - left - right, ph = h - top - bottom;
    const X = (t) => left + ((t - t0) / Math.max(t1 - t0, 1e-3)) * pw;
    const Y = (mm) => top + ph - ((mm - lo) / (hi - lo)) * ph;
    const V = (v) => top + ph / 2 - (v / vmax) * (ph / 2);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#222d3a";
    ctx.fillStyle = "#7f8fa3";
    const step = niceStep((hi - lo) / 4);
    ctx.textBaseline = "middle";
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      ctx.beginPath(); ctx.moveTo(left, Y(v)); ctx.lineTo(left + pw, Y(v)); ctx.stroke();
      ctx.fillText((v / 1000).toFixed(step < 1000 ? 2 : 1) + " m", 6, Y(v));
    }
    ctx.fillStyle = "#8ce99a";
    ctx.fillText(fmt0(vmax) + " mm/s", left + pw + 6, V(vmax) + 6);
    ctx.fillText("0", left + pw + 6, V(0));
    ctx.fillStyle = "#7f8fa3";
    ctx.textBaseline = "alphabetic";
    const dur = t1 - t0;
    const ts = niceStep(dur / 6);
    for (let s = 0; s <= dur; s += ts) ctx.fillText(s.toFixed(ts < 1 ? 1 : 0) + " s", X(t0 + s) - 8, h - 6);
    for (const [ch, color] of [["slave", "#ffa94d"], ["master", "#4fa3ff"]]) {
      ctx.strokeStyle = color; ctx.lineWidth = ch === "master" ? 2 : 1.5;
      ctx.beginPath();
      (by[ch] || []).forEach(([t, mm], i) => (i ? ctx.lineTo(X(t), Y(mm)) : ctx.moveTo(X(t), Y(mm))));
      ctx.stroke();
    }
    ctx.strokeStyle = "#8ce99a"; ctx.lineWidth = 1.5; ctx.setLineDash([5, 3]);
    ctx.beginPath();
    speed.forEach(([t, v], i) => (i ? ctx.lineTo(X(t), V(v)) : ctx.moveTo(X(t), V(v))));
    ctx.stroke(); ctx.setLineDash([]);
    for (const t of [doc.ride.start_ts, doc.ride.end_ts]) {
      ctx.strokeStyle = "rgba(173,181,189,.5)"; ctx.setLineDash([4, 4]);
      ctx.beginPath(); ctx.moveTo(X(t), top); ctx.lineTo(X(t), top + ph); ctx.stroke(); ctx.setLineDash([]);
    }
  }

  // -- debug sidebar ------------------------------------------------------------------------------
  // the sidebar is updated at most 4 times a second: every insertion at the top moves (and
  // repaints) the whole list
  let debugPending = [];
  function queueDebug(events) {
    for (const ev of events) debugPending.push(ev);
    if (debugPending.length > MAX_DEBUG) debugPending.splice(0, debugPending.length - MAX_DEBUG);
  }
  function flushDebug() {
    if (!debugPending.length) return;
    const events = debugPending;
    debugPending = [];
    addDebug(events);
  }
  setInterval(flushDebug, 250);

  function addDebug(events) {
    if (!events.length) return;
    if (state.debugPaused) {
      state.debugHeld.push(...events);
      if (state.debugHeld.length > MAX_DEBUG) state.debugHeld.splice(0, state.debugHeld.length - MAX_DEBUG);
      $("debug-note").textContent = `paused · ${state.debugHeld.length} new event(s) held`;
      return;
    }
    const list = $("debug-list");
    const filter = $("debug-filter").value;
    const frag = document.createDocumentFragment();
    const start = Math.max(0, events.length - MAX_DEBUG);
    for (let i = events.length - 1; i >= start; i--) {
      const ev = events[i];
      const li = el("li", { "data-type": ev.type });
      if (filter && ev.type !== filter) li.hidden = true;
      const head = el("div", { class: "h" }, li);
      el("span", { class: "t " + ev.type, text: ev.type }, head);
      el("span", { text: typeof ev.ts === "number" ? clock(ev.ts) : "" }, head);
      el("span", { text: ev.source || "" }, head);
      el("code", { text: JSON.stringify(ev.payload) }, li);
      frag.appendChild(li);
    }
    list.insertBefore(frag, list.firstChild);
    while (list.childElementCount > MAX_DEBUG) list.removeChild(list.lastChild);
  }

  function updateTypes(counts) {
    const sel = $("debug-filter");
    for (const type in counts) {
      let opt = sel.querySelector(`option[value="${type}"]`);
      if (!opt) {
        opt = el("option", { value: type }, sel);
      }
      opt.textContent = `${type} (${counts[type].toLocaleString("en")})`;
    }
  }

  $("debug-filter").addEventListener("change", () => {
    const f = $("debug-filter").value;
    for (const li of $("debug-list").children) li.hidden = !!f && li.getAttribute("data-type") !== f;
  });
  $("debug-pause").addEventListener("click", () => {
    state.debugPaused = !state.debugPaused;
    const b = $("debug-pause");
    b.setAttribute("aria-pressed", String(state.debugPaused));
    b.textContent = state.debugPaused ? "resume" : "pause";
    if (!state.debugPaused) {
      const held = state.debugHeld;
      state.debugHeld = [];
      $("debug-note").textContent = "";
      addDebug(held);
    } else {
      $("debug-note").textContent = "paused";
    }
  });
  $("debug-clear").addEventListener("click", () => { $("debug-list").textContent = ""; state.debugHeld = []; });

  // -- live stream --------------------------------------------------------------------------------
  // -- lifts (a fleet's, only when events carry a site) -------------------------------------------
  function liftKey(site, source) { return site + "\u0000" + source; }
  function mergeLifts(rows, gone, evicted) {
    for (const r of rows || []) state.lifts.set(liftKey(r.site, r.source), r);
    for (const g of gone || []) state.lifts.delete(liftKey(g[0], g[1]));
    if (evicted !== undefined) state.liftsEvicted = evicted;
    state.liftsDirty = true;
  }
  function renderLifts() {
    if (!state.liftsDirty) return;
    state.liftsDirty = false;
    const card = $("lifts-card");
    card.hidden = state.lifts.size === 0;
    if (card.hidden) return;
    const rows = [...state.lifts.values()].sort((a, b) =>
      a.site < b.site ? -1 : a.site > b.site ? 1 : a.source < b.source ? -1 : a.source > b.source ? 1 : 0);
    const body = $("lifts-body");
    body.textContent = "";
    const shown = rows.slice(0, 500);  // a compact panel: the rest are counted
    for (const r of shown) {
      const st = r.online === true ? "online" : r.online === false ? "offline" : "unknown";
      const tr = el("tr", { "data-site": r.site, "data-source": r.source, "data-state": st }, body);
      el("td", { text: r.site }, tr);
      el("td", { text: r.source }, tr);
      const td = el("td", { class: "lift-state" }, tr);
      el("span", { class: "dot " + st }, td);
      el("span", { text: " " + st }, td);
      el("td", { text: r.last_seen == null ? "–" : dateTime(r.last_seen) }, tr);
      el("td", { class: "r", text: r.position_mm == null ? "–" : fmt0(r.position_mm) + " mm" }, tr);
    }
    const online = rows.filter((r) => r.online === true).length;
    let note = `${online} of ${rows.length} online`;
    if (rows.length > shown.length) note += `, first ${shown.length} shown`;
    if (state.liftsEvicted) note += `, ${state.liftsEvicted} not seen for longest dropped`;
    $("lifts-note").textContent = note;
  }

  function onStats(s) {
    state.stats = s;
    state.floors = s.floors_mm || [];
    state.floorsFrom = s.floors_from;
    state.resolution = s.resolution_mm || 1;
    state.dirty = true;
    if (s.revision !== state.graph.revision && state.graph.revision !== undefined) {
      // a re-deploy we have not seen the graph of yet
      api("/api/flow").then((doc) => { state.graph = doc.graph; renderFlow(); }).catch(() => {});
    }
    updateFlowStats();
  }

  function onTick(m) {
    state.lastRecv = performance.now();
    state.dirty = true;
    for (const ch in m.samples) {
      const [ts, raw] = m.samples[ch];
      state.last[ch] = [ts, raw];
      addPoint(ch, ts, raw);
    }
    state.speed = m.speed_mm_s;
    state.ride = m.ride;
    state.mismatch = m.mismatch;
    const debug = [];
    let rideEnded = false;
    for (const ev of m.events) {
      if (["channel_mismatch", "dropout", "ride_start", "ride_end", "relevel"].includes(ev.type)) {
        state.marks.push({ type: ev.type, ts: ev.ts, payload: ev.payload });
        if (state.marks.length > 500) state.marks.splice(0, state.marks.length - 500);
      }
      if (ev.type === "ride_end") {
        state.liveRides.unshift(ev.payload);
        state.liveRides.length = Math.min(state.liveRides.length, 50);
        rideEnded = true;
      }
      debug.push(ev);
    }
    // position samples: at most 5 a second per channel in the sidebar (the chart shows them all)
    const now = performance.now();
    for (const ch in m.samples) {
      if (now - (state.debugSampleAt[ch] || 0) < 200) continue;
      state.debugSampleAt[ch] = now;
      debug.push({ type: "position_sample", ts: m.samples[ch][0], source: "", payload: { channel: ch, position_raw: m.samples[ch][1] } });
    }
    queueDebug(debug);
    if (m.skipped) $("debug-note").textContent = `${m.skipped} event(s) not shown (too many at once)`;
    if (now - (state.typesAt || 0) > 1000) {  // the filter's counts: once a second is plenty
      state.typesAt = now;
      updateTypes(m.counts);
    }
    if (m.lifts) { mergeLifts(m.lifts, m.lifts_gone, m.lifts_evicted); renderLifts(); }
    updateReadouts();
    if (rideEnded) { renderRides(); setTimeout(() => loadRides(4), 300); }
  }

  function onHello(h) {
    state.graph = h.graph;
    state.history = h.history;
    state.updateRate = h.update_rate;
    state.store = h.store;
    const live = h.live;
    state.points = { master: [], slave: [] };
    for (const ch in live.points) state.points[ch] = live.points[ch].slice();
    state.last = live.last;
    state.marks = live.marks.slice();
    state.ride = live.ride;
    state.mismatch = live.mismatch;
    state.speed = live.speed_mm_s;
    state.lastRecv = performance.now();
    state.dirty = true;
    renderFlow();
    onStats(h.stats);
    $("debug-list").textContent = "";
    addDebug(live.recent);
    updateTypes(live.counts);
    state.lifts = new Map();
    mergeLifts(live.lifts, [], live.lifts_evicted);
    renderLifts();
    updateReadouts();
    loadRides(0);
  }

  let retry = 500;
  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + withToken("/ws");
    const ws = new WebSocket(url);
    const conn = $("conn");
    ws.onopen = () => { conn.dataset.state = "live"; $("conn-text").textContent = "live"; retry = 500; };
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.kind === "tick") onTick(m);
      else if (m.kind === "stats") onStats(m);
      else if (m.kind === "hello") onHello(m);
      else if (m.kind === "graph") { state.graph = m.graph; renderFlow(); }
    };
    ws.onclose = (e) => {
      conn.dataset.state = e.code === 1008 || e.code === 4401 ? "error" : "connecting";
      $("conn-text").textContent = "reconnecting…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }

  // -- drawing: only what changed, once per animation frame -------------------------------------
  let frames = 0, fpsT = performance.now();
  function frame(now) {
    frames++;
    if (now - fpsT >= 1000) {
      state.fps = Math.round((frames * 1000) / (now - fpsT));
      frames = 0; fpsT = now;
      if (params.has("fps")) $("fps").textContent = state.fps + " fps";  // /?fps shows it
    }
    // draw only what changed: a canvas redraw costs the main thread, and the data changes at
    // most update_rate times a second
    if (state.dirty) {
      state.dirty = false;
      drawChart();
      drawShaft();
    }
    requestAnimationFrame(frame);
  }
  window.addEventListener("resize", () => {
    state.dirty = true; if (state.selectedRide) { const r = allRides().find((x) => x.ride_id === state.selectedRide); if (r) selectRide(r); } });

  // a failed token: say so instead of retrying for ever
  api("/api/flow").then((doc) => {
    state.graph = doc.graph;
    renderFlow();
    connect();
  }).catch((e) => {
    $("conn").dataset.state = "error";
    $("conn-text").textContent = e.message;
  });
  requestAnimationFrame(frame);
})();
