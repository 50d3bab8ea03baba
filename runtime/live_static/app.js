// stepwise live view: server-sent events in, two scrolling canvas charts and the counters out.
// window.stepwiseView holds what is drawn (meta, points per stream, counters), for scripts and tests.
"use strict";
(function () {
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
  const view = { meta: null, window: 600, streams: [], points: {}, counters: {}, selected: null,
                 received: 0, connected: false, lastCheckpointAt: null };
  window.stepwiseView = view;
  const $ = (id) => document.getElementById(id);
  const esc = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);  // names from files
  let source = null;
  let dirty = true;

  function keep(stream, points) {
    const list = view.points[stream] || (view.points[stream] = []);
    for (const p of points) list.push(p);
    if (list.length > view.window) list.splice(0, list.length - view.window);
    if (!view.streams.includes(stream)) { view.streams.push(stream); view.streams.sort(); pickerOptions(); }
    if (view.selected === null) view.selected = stream;
  }

  function pickerOptions() {
    const select = $("stream");
    const current = view.selected;
    select.innerHTML = "";
    const all = view.streams.length ? view.streams : ["(waiting for samples)"];
    for (const s of all) {
      const o = document.createElement("option");
      o.value = s; o.textContent = s; o.selected = s === current;
      select.appendChild(o);
    }
  }

  function connect(stream) {
    if (source) source.close();
    const url = "/events" + (stream ? "?stream=" + encodeURIComponent(stream) : "");
    source = new EventSource(url);
    source.addEventListener("state", (e) => {
      const s = JSON.parse(e.data);
      view.meta = s.meta; view.window = s.window || view.window;
      view.counters = s.counters || {};
      view.points = {};
      for (const name of s.streams) if (!view.streams.includes(name)) view.streams.push(name);
      view.streams.sort();
      for (const [name, pts] of Object.entries(s.history)) keep(name, pts);
      if (view.selected === null && view.streams.length) view.selected = view.streams[0];
      pickerOptions(); legends(); dirty = true;
    });
    source.addEventListener("points", (e) => {
      const m = JSON.parse(e.data);
      view.received += m.points.length;
      keep(m.stream, m.points); dirty = true;
    });
    source.addEventListener("counters", (e) => {
      view.counters = JSON.parse(e.data);
      dirty = true;
    });
    source.onopen = () => { view.connected = true; $("connection").textContent = "live"; };
    source.onerror = () => { view.connected = false; $("connection").textContent = "reconnecting…"; };
  }

  function legends() {
    if (!view.meta) return;
    const entry = (name, i) => `<span><i style="background:${COLOURS[i % COLOURS.length]}"></i>${esc(name)}</span>`;
    $("features-legend").innerHTML = view.meta.features.map(entry).join("");
    const classes = outputNames();
    let html = classes.map(entry).join("");
    if (view.meta.threshold !== null) html += `<span><i style="background:#888"></i>threshold ${view.meta.threshold}</span>`;
    $("predictions-legend").innerHTML = html;
    $("window").textContent = view.window;
    $("model").textContent = `${view.meta.variant} · ${view.meta.reset}`;  // textContent: no markup
  }

  function outputNames() {
    const m = view.meta;
    if (m.kind === "sigmoid" && m.classes.length === 2) return ["P(" + m.classes[1] + ")"];
    return m.classes.map((c) => "P(" + c + ")");
  }

  function chart(canvas, series, lo, hi, threshold) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 34;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px sans-serif"; ctx.fillStyle = "#666"; ctx.strokeStyle = "#eee";
    for (const v of [lo, (lo + hi) / 2, hi]) {
      const y = h - 6 - (v - lo) / (hi - lo || 1) * (h - 12);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(Number(v.toPrecision(3)).toString(), 2, y + 4);
    }
    const shift = view.window - Math.max(0, ...series.map((v) => v.length));  // newest at the right edge
    const x = (k) => pad + (k + shift) / Math.max(1, view.window - 1) * (w - pad);
    const y = (v) => h - 6 - (v - lo) / (hi - lo || 1) * (h - 12);
    if (threshold !== null && threshold !== undefined) {
      ctx.setLineDash([5, 4]); ctx.strokeStyle = "#888";
      ctx.beginPath(); ctx.moveTo(pad, y(threshold)); ctx.lineTo(w, y(threshold)); ctx.stroke();
      ctx.setLineDash([]);
    }
    series.forEach((values, s) => {
      ctx.strokeStyle = COLOURS[s % COLOURS.length]; ctx.lineWidth = 1.5; ctx.beginPath();
      let started = false;
      values.forEach((v, k) => {
        if (v === null) { started = false; return; }
        if (started) ctx.lineTo(x(k), y(v)); else { ctx.moveTo(x(k), y(v)); started = true; }
      });
      ctx.stroke();
    });
  }

  function counters() {
    const c = view.counters, rows = [];
    const add = (name, value) => rows.push(`<tr><td>${esc(name)}</td><td class="value">${esc(value)}</td></tr>`);
    add("samples", c.samples ?? 0);
    add("predictions", c.predictions ?? 0);
    for (const [k, v] of Object.entries(c).sort()) if (k.startsWith("rejected_")) add("rejected: " + k.slice(9).replace(/_/g, " "), v);
    add("reconnects", c.link_reconnects ?? 0);
    add("resets from the device", c.resets ?? 0);
    add("checkpoints", c.checkpoints ?? 0);
    const age = c.last_checkpoint ? Math.max(0, Date.now() / 1000 - c.last_checkpoint) : null;
    add("last checkpoint", age === null ? "none yet" : age.toFixed(1) + " s ago");
    add("view: points sent of samples seen", `${c.live_kept ?? 0} of ${c.live_offered ?? 0}`);
    add("view: points dropped (queues full)", (c.live_dropped ?? 0) + (c.live_client_dropped ?? 0));
    $("counters").tBodies[0].innerHTML = rows.join("");
  }

  function draw() {
    if (dirty && view.meta) {
      dirty = false;
      const pts = view.points[view.selected] || [];
      const nf = view.meta.features.length, ny = outputNames().length;
      const xs = [...Array(nf).keys()].map((f) => pts.map((p) => p[3][f]));
      const flat = xs.flat().filter((v) => v !== null);
      const lo = flat.length ? Math.min(...flat) : 0, hi = flat.length ? Math.max(...flat) : 1;
      chart($("features"), xs, lo, hi === lo ? lo + 1 : hi, null);
      const ys = [...Array(ny).keys()].map((u) => pts.map((p) => p[4][u]));
      chart($("predictions"), ys, 0, 1, view.meta.threshold);
      const last = pts[pts.length - 1];
      $("label").textContent = last ? last[5] : "–";
      $("sample").textContent = last ? last[0] : "–";
      $("step").textContent = last ? last[2] : "–";
    }
    counters();
    requestAnimationFrame(draw);
  }

  $("stream").addEventListener("change", (e) => { view.selected = e.target.value; dirty = true; });
  pickerOptions();
  connect(null);
  requestAnimationFrame(draw);
})();
