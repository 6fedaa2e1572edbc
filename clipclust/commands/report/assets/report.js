/* clipclust report: reads the inlined data, draws the map on a canvas, the cards, the table and the drawer.
   No library and no network: everything it needs is in this file or beside it (the thumbnail packs). */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#843c39",
    "#637939"];
  const NOISE = "#b8bcc4";
  const PACK = 256;
  const SHOWN = 300; // items the drawer lists (its CSV holds them all)
  let D = null, THUMBS = [], dpr = 1;
  const S = { cur: 0, q: "", terms: [], match: null, nMatch: 0, focus: null, zoom: 1, px: 0, py: 0, hover: -1,
              drawer: null, cache: [] };

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "style") node.setAttribute("style", v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) node.append(kid);
    return node;
  }

  function colour(c) {
    if (c < 0) return NOISE;
    if (c < PALETTE.length) return PALETTE[c];
    return `hsl(${(c * 137.508) % 360}, 55%, ${45 + (c % 3) * 8}%)`;
  }
  const rgbCache = new Map();
  function rgb(c) { // [r, g, b] of a cluster's colour, read back from a canvas so any CSS colour works
    if (!rgbCache.has(c)) {
      const ctx = document.createElement("canvas").getContext("2d");
      ctx.fillStyle = colour(c); ctx.fillRect(0, 0, 1, 1);
      rgbCache.set(c, Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3)));
    }
    return rgbCache.get(c);
  }
  function packed(r, g, b) { return (255 << 24 | b << 16 | g << 8 | r) >>> 0; }

  // ---------- data ----------
  async function readData() {
    const b64 = $("cc-data").textContent.trim();
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function clustering() { return D.clusterings[S.cur]; }
  function view() { // per clustering, made once: cluster id per catalog row (-2: not in it), members, names
    if (S.cache[S.cur]) return S.cache[S.cur];
    const C = clustering(), n = D.items.paths.length;
    const ids = new Int32Array(n).fill(-2);
    const rows = C.rows || null;
    for (let j = 0; j < C.ids.length; j++) ids[rows ? rows[j] : j] = C.ids[j];
    const members = new Map(), names = new Map();
    for (const card of C.cards) { members.set(card.id, []); names.set(card.id, card.name); }
    for (let i = 0; i < n; i++) if (ids[i] !== -2) members.get(ids[i]).push(i);
    const texts = C.text >= 0 ? D.texts[C.text].texts : null;
    const labelOf = (i) => { const l = D.items.labels[i]; const raw = l >= 0 ? D.label_names[l] : "";
                             return C.label_map ? (C.label_map[raw] || "") : raw; };
    return (S.cache[S.cur] = { ids, members, names, texts, labelOf });
  }
  function textOf(i) {
    const v = view();
    if (v.texts && v.texts[i]) return v.texts[i];
    for (const t of D.texts) if (t.texts[i]) return t.texts[i];
    return "";
  }
  function fileName(path) { const parts = path.split(/[\\/]/); return parts[parts.length - 1] || path; }
  function fileUrl(path) { return path.startsWith("/") ? "file://" + encodeURI(path) : encodeURI(path); }

  // ---------- thumbnails: inline, or from the packs beside the page ----------
  const packs = new Map();
  window.clipclustPack = function (n, list) { const p = packs.get(n); if (p) p.resolve(list); };
  function loadPack(n) {
    if (!packs.has(n)) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      packs.set(n, { promise, resolve });
      const src = encodeURIComponent(D.thumbs.folder) + "/thumbs-" + String(n).padStart(4, "0") + ".js";
      document.head.append(el("script", { src, onerror: () => resolve(null) }));
    }
    return packs.get(n).promise;
  }
  function thumbSrc(i) {
    const t = D.items.thumb[i];
    const url = (s) => "data:image/" + D.thumbs.format + ";base64," + s;
    if (t >= 0) return Promise.resolve(url(THUMBS[t]));
    const slot = D.items.slot ? D.items.slot[i] : -1;
    if (slot < 0) return Promise.resolve(null);
    return loadPack(Math.floor(slot / PACK)).then((list) => (list ? url(list[slot % PACK]) : null));
  }
  function hasThumb(i) { return D.items.thumb[i] >= 0 || (D.items.slot && D.items.slot[i] >= 0); }

  const waiting = new Map();
  const seen = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting || !waiting.has(entry.target)) continue;
      waiting.get(entry.target)(); waiting.delete(entry.target); seen.unobserve(entry.target);
    }
  }, { rootMargin: "200px" });
  function later(node, show) { waiting.set(node, show); seen.observe(node); }
  function tile(i, extra) {
    const kind = D.items.kinds[i], path = D.items.paths[i], v = view();
    const label = v.labelOf(i);
    const title = path + (label ? "\nlabel: " + label : "") + (extra && extra.title ? "\n" + extra.title : "");
    let node;
    if (kind === 2) node = el("figure", { class: "tile text", title }, textOf(i) || fileName(path));
    else if (kind === 1) node = el("figure", { class: "tile missing", title: title + "\n(image file missing)" }, "image missing");
    else if (!hasThumb(i)) node = el("figure", { class: "tile path", title }, fileName(path));
    else {
      const img = el("img", { alt: fileName(path) });
      const show = () => thumbSrc(i).then((src) => { if (src) img.src = src; else img.replaceWith(fileName(path)); });
      node = el("a", { class: "tile", title, href: fileUrl(path), target: "_blank", rel: "noopener" }, img);
      if (D.items.thumb[i] >= 0) show(); else later(node, show); // a pack is loaded when its tile is seen
    }
    node.dataset.row = i;
    if (S.match && S.match[i]) node.classList.add("found");
    if (extra && extra.near !== undefined) node.append(el("span", { class: "near", style: `background:${colour(extra.near)}` }));
    return node;
  }

  // ---------- search ----------
  const hay = new Map();
  function haystack() { // lower-cased path, label and description of each row, per description set
    const key = clustering().text;
    if (!hay.has(key)) {
      const v = view(), n = D.items.paths.length, out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = (D.items.paths[i] + "\u0001" + v.labelOf(i) + "\u0001" + textOf(i)).toLowerCase();
      hay.set(key, out);
    }
    return hay.get(key);
  }
  function runSearch() {
    S.terms = S.q.toLowerCase().split(/\s+/).filter(Boolean);
    if (!S.terms.length) { S.match = null; S.nMatch = 0; return; }
    const C = clustering(), v = view(), h = haystack(), n = h.length;
    const cardHit = new Map();
    for (const card of C.cards) {
      const words = (card.name + " " + card.raw_labels.map((r) => r[0]).join(" ")).toLowerCase();
      cardHit.set(card.id, S.terms.map((t) => words.includes(t)));
    }
    const match = new Uint8Array(n);
    let count = 0;
    for (let i = 0; i < n; i++) {
      const c = v.ids[i];
      if (c === -2) continue;
      const byName = cardHit.get(c);
      let ok = true;
      for (let t = 0; t < S.terms.length && ok; t++) ok = byName[t] || h[i].includes(S.terms[t]);
      if (ok) { match[i] = 1; count++; }
    }
    S.match = match; S.nMatch = count;
  }
  function matchedRows() {
    const out = [];
    if (S.match) for (let i = 0; i < S.match.length; i++) if (S.match[i]) out.push(i);
    return out;
  }

  // ---------- CSV ----------
  function csvOf(rows) {
    const v = view(), withText = !!v.texts;
    const q = (s) => (/[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s);
    const head = ["path", "sha256", "label", "cluster", "cluster_name"].concat(withText ? ["description"] : []);
    const lines = [head.join(",")];
    for (const i of rows) {
      const c = v.ids[i];
      const l = D.items.labels[i];
      const cells = [D.items.paths[i], D.items.keys[i], l >= 0 ? D.label_names[l] : "", String(c), c >= 0 ? v.names.get(c) : ""];
      if (withText) cells.push(v.texts[i] || "");
      lines.push(cells.map((s) => q(String(s))).join(","));
    }
    return lines.join("\n") + "\n";
  }
  function download(name, rows) {
    const url = URL.createObjectURL(new Blob([csvOf(rows)], { type: "text/csv" }));
    const a = el("a", { href: url, download: name.replace(/[^\w.-]+/g, "_") + ".csv" });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }

  // ---------- map ----------
  const M = { xs: null, ys: null, image: null, frame: 0, drag: null, stamp: null, stampR: -1 };
  const canvas = $("map");
  function setupMap() {
    if (!D.map) {
      $("map-note").textContent = "No stored vectors place these items on a map.";
      document.querySelector(".map-tools").hidden = true;
      return;
    }
    const n = D.map.x.length;
    M.xs = new Float32Array(n); M.ys = new Float32Array(n);
    let x0 = 1, x1 = 0, y0 = 1, y1 = 0;
    for (let i = 0; i < n; i++) {
      M.xs[i] = D.map.x[i] < 0 ? NaN : D.map.x[i] / 65535;
      M.ys[i] = D.map.y[i] < 0 ? NaN : D.map.y[i] / 65535;
      if (D.map.x[i] >= 0) { x0 = Math.min(x0, M.xs[i]); x1 = Math.max(x1, M.xs[i]); y0 = Math.min(y0, M.ys[i]); y1 = Math.max(y1, M.ys[i]); }
    }
    M.box = x1 >= x0 ? [(x0 + x1) / 2, (y0 + y1) / 2, Math.max(x1 - x0, 1e-3), Math.max(y1 - y0, 1e-3)] : [0.5, 0.5, 1, 1];
    canvas.addEventListener("wheel", onWheel, { passive: false });
    canvas.addEventListener("pointerdown", onDown);
    canvas.addEventListener("pointermove", onMove);
    canvas.addEventListener("pointerup", onUp);
    canvas.addEventListener("pointerleave", () => { if (!M.drag) setHover(-1); });
    canvas.addEventListener("dblclick", resetView);
    $("zoom-in").onclick = () => zoomAt(canvas.width / 2, canvas.height / 2, 1.6);
    $("zoom-out").onclick = () => zoomAt(canvas.width / 2, canvas.height / 2, 1 / 1.6);
    $("zoom-reset").onclick = resetView;
    new ResizeObserver(() => requestDraw()).observe(canvas);
  }
  function frame() { // screen x = ox + x * k, screen y = oy - y * k: the points fitted to the canvas, zoomed, panned
    const [mx, my, sx, sy] = M.box, W = canvas.width, H = canvas.height;
    const k = Math.min((W - 24 * dpr) / sx, (H - 24 * dpr) / sy) * S.zoom;
    return { k, ox: W / 2 + S.px - mx * k, oy: H / 2 + S.py + my * k };
  }
  function toScreen(i) { const f = frame(); return [f.ox + M.xs[i] * f.k, f.oy - M.ys[i] * f.k]; }
  function radius(n) {
    const r = n > 50000 ? 1 : n > 10000 ? 1.5 : n > 2000 ? 2.5 : 3.5;
    return Math.min(r * Math.sqrt(S.zoom), 9) * dpr;
  }
  function stampFor(r) {
    const R = Math.max(1, Math.round(r));
    if (M.stampR !== R) {
      const out = [];
      for (let dy = -R; dy <= R; dy++) for (let dx = -R; dx <= R; dx++) if (dx * dx + dy * dy <= r * r + 0.5) out.push(dx, dy);
      M.stamp = out; M.stampR = R;
    }
    return M.stamp;
  }
  function requestDraw() { if (!M.frame) M.frame = requestAnimationFrame(() => { M.frame = 0; draw(); }); }
  function draw() {
    if (!M.xs) return;
    dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.round(canvas.clientWidth * dpr)), H = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; M.image = null; }
    const ctx = canvas.getContext("2d");
    if (!M.image) M.image = ctx.createImageData(W, H);
    const buf = new Uint32Array(M.image.data.buffer);
    const BG = packed(255, 255, 255);
    buf.fill(BG);
    const v = view(), n = M.xs.length, ids = v.ids, xs = M.xs, ys = M.ys, match = S.match, focus = S.focus;
    const cards = clustering().cards;
    const top = Math.max(0, ...cards.map((card) => card.id)) + 2;
    const on = new Uint32Array(top), off = new Uint32Array(top); // by cluster id + 1 (noise is -1)
    for (const card of cards) {
      const [r, g, b] = rgb(card.id), fade = (u) => Math.round(u + (255 - u) * 0.82);
      on[card.id + 1] = packed(r, g, b);
      off[card.id + 1] = packed(fade(r), fade(g), fade(b));
    }
    const dim = match !== null || focus !== null;
    const stamp = stampFor(radius(clustering().ids.length)), R = M.stampR + 1;
    const offsets = new Int32Array(stamp.length / 2);
    for (let s = 0; s < offsets.length; s++) offsets[s] = stamp[2 * s + 1] * W + stamp[2 * s];
    const f = frame(), k = f.k, ox = f.ox, oy = f.oy;
    let drawn = 0;
    for (let pass = dim ? 0 : 1; pass < 2; pass++) { // dimmed points first, the lit ones on top
      for (let i = 0; i < n; i++) {
        const c = ids[i], px = xs[i];
        if (c < -1 || px !== px) continue;
        const bright = !dim || ((match === null || match[i] === 1) && (focus === null || c === focus));
        if (bright !== (pass === 1)) continue;
        const x = Math.round(ox + px * k), y = Math.round(oy - ys[i] * k);
        if (x < -R || y < -R || x >= W + R || y >= H + R) continue;
        const col = bright ? on[c + 1] : off[c + 1];
        if (x >= R && y >= R && x < W - R && y < H - R) {
          const at = y * W + x;
          for (let s = 0; s < offsets.length; s++) buf[at + offsets[s]] = col;
        } else {
          for (let s = 0; s < stamp.length; s += 2) {
            const qx = x + stamp[s], qy = y + stamp[s + 1];
            if (qx >= 0 && qy >= 0 && qx < W && qy < H) buf[qy * W + qx] = col;
          }
        }
        drawn++;
      }
    }
    ctx.putImageData(M.image, 0, 0);
    let painted = 0;
    for (let p = 0; p < buf.length; p++) if (buf[p] !== BG) painted++;
    if (S.hover >= 0) {
      const [x, y] = toScreen(S.hover);
      ctx.beginPath(); ctx.arc(x, y, radius(clustering().ids.length) + 4 * dpr, 0, 2 * Math.PI);
      ctx.lineWidth = 2 * dpr; ctx.strokeStyle = "#111"; ctx.stroke();
    }
    document.body.dataset.mapPoints = drawn;
    document.body.dataset.mapPixels = painted;
    $("map-note").textContent = `${D.map.kind.toUpperCase()} of '${D.map.set}' · ${drawn.toLocaleString()} points` +
      " · scroll to zoom, drag to pan, double-click to fit";
  }
  function zoomAt(mx, my, f) {
    const z = Math.min(400, Math.max(0.5, S.zoom * f)), k = z / S.zoom;
    const cx = canvas.width / 2, cy = canvas.height / 2;
    S.px = mx - cx - (mx - cx - S.px) * k; S.py = my - cy - (my - cy - S.py) * k; S.zoom = z;
    requestDraw();
  }
  function resetView() { S.zoom = 1; S.px = 0; S.py = 0; requestDraw(); }
  function devicePoint(e) { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr]; }
  function onWheel(e) { e.preventDefault(); const [x, y] = devicePoint(e); zoomAt(x, y, Math.exp(-e.deltaY * 0.0015)); }
  function onDown(e) { const [x, y] = devicePoint(e); M.drag = { x, y, moved: 0 }; canvas.setPointerCapture(e.pointerId); canvas.classList.add("dragging"); }
  function onUp(e) {
    canvas.classList.remove("dragging");
    const drag = M.drag; M.drag = null;
    if (drag && drag.moved < 4 * dpr) { const i = nearest(...devicePoint(e)); if (i >= 0 && view().ids[i] >= 0) openCluster(view().ids[i]); }
  }
  function onMove(e) {
    const [x, y] = devicePoint(e);
    if (M.drag) {
      S.px += x - M.drag.x; S.py += y - M.drag.y; M.drag.moved += Math.abs(x - M.drag.x) + Math.abs(y - M.drag.y);
      M.drag.x = x; M.drag.y = y; $("tip").hidden = true; requestDraw(); return;
    }
    M.mouse = [x, y, e.clientX, e.clientY];
    if (!M.hoverFrame) M.hoverFrame = requestAnimationFrame(() => { M.hoverFrame = 0; setHover(nearest(M.mouse[0], M.mouse[1])); });
  }
  function nearest(x, y) {
    const v = view(), f = frame();
    let best = -1, bestD = Math.pow(Math.max(8 * dpr, radius(clustering().ids.length) + 3 * dpr), 2);
    for (let i = 0; i < M.xs.length; i++) {
      if (v.ids[i] === -2 || M.xs[i] !== M.xs[i]) continue;
      const dx = f.ox + M.xs[i] * f.k - x, dy = f.oy - M.ys[i] * f.k - y, d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }
  function pinTip() { // #item=SHA256 (or a prefix): that item's tooltip, as if the mouse were on its point
    if (!M.xs || S.pin < 0 || M.xs[S.pin] !== M.xs[S.pin] || view().ids[S.pin] === -2) return;
    const [x, y] = toScreen(S.pin), r = canvas.getBoundingClientRect();
    M.mouse = [x, y, r.left + x / dpr, r.top + y / dpr];
    setHover(S.pin);
  }
  function setHover(i) {
    const tip = $("tip");
    if (i !== S.hover) { S.hover = i; requestDraw(); }
    if (i < 0) { tip.hidden = true; return; }
    const v = view(), c = v.ids[i], box = canvas.parentElement.getBoundingClientRect();
    const label = v.labelOf(i), text = textOf(i), kind = D.items.kinds[i];
    tip.replaceChildren();
    if (kind === 0 && hasThumb(i)) {
      const img = el("img", { alt: "" });
      tip.append(img);
      thumbSrc(i).then((src) => { if (src && S.hover === i) img.src = src; });
    } else if (kind === 1) tip.append(el("div", { class: "warn" }, "image file missing"));
    if (text) tip.append(el("div", { class: "text" }, text.length > 220 ? text.slice(0, 220) + "…" : text));
    tip.append(el("div", {}, el("span", { class: "swatch", style: `background:${colour(c)}` }), " ", el("b", {}, v.names.get(c))));
    if (label) tip.append(el("div", { class: "muted" }, "label: " + label));
    tip.append(el("div", {}, D.items.paths[i]));
    tip.hidden = false;
    const left = M.mouse[2] - box.left + 14, top = M.mouse[3] - box.top + 14;
    tip.style.left = Math.min(left, box.width - 270) + "px";
    tip.style.top = Math.min(top, box.height - tip.offsetHeight - 6) + "px";
  }

  // ---------- panels ----------
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1); }
  function renderSwitcher() {
    const nav = $("switcher");
    nav.replaceChildren(...D.clusterings.map((C, k) => el("button", {
      type: "button", class: k === S.cur ? "on" : null, title: `${C.method} on '${C.on}'`, onclick: () => setClustering(k),
    }, C.name)));
  }
  function renderSide() {
    const C = clustering(), facts = [["method", C.method], ["on", C.on], ["criterion", C.criterion],
      ["clusters", String(C.cards.filter((c) => c.id >= 0).length) + (C.cards.some((c) => c.id < 0) ? " + noise" : "")],
      ["items", C.ids.length.toLocaleString()], ["typical by", C.ranked_by], ["made", C.created.replace("T", " ").replace(/(:\d\d)(\.\d+)?(\+00:00|Z)$/, "$1 UTC")]];
    $("facts").replaceChildren(...facts.filter((f) => f[1]).flatMap(([k, val]) => [el("dt", {}, k), el("dd", {}, val)]));
    const sc = C.scores;
    $("scores").replaceChildren(...(sc ? [["ACC", sc.acc], ["NMI", sc.nmi], ["ARI", sc.ari]].map(([k, val]) =>
      el("div", { class: "score", title: `${k} against the labels of ${sc.n_labelled} items (${sc.n_classes} classes)` },
        el("b", {}, pct(val)), el("span", {}, k + " %"))) : []));
    const v = view();
    $("legend").replaceChildren(...C.cards.map((card) => el("li", {
      class: S.focus === card.id ? "focus" : null, title: "Show this cluster on the map and its card",
      onclick: () => focusCluster(card.id),
    }, el("span", { class: "swatch", style: `background:${colour(card.id)}` }), el("span", {}, v.names.get(card.id)),
    el("span", { class: "n" }, card.size.toLocaleString()))));
  }
  function renderTable() {
    const C = clustering(), T = C.table, box = $("table-box");
    box.hidden = !T;
    if (!T) return;
    const mapping = C.scores ? C.scores.mapping || {} : {};
    const v = view();
    const head = el("tr", {}, el("th", { class: "row" }, "cluster"), T.labels.map((l) => el("th", {}, l)), el("th", {}, "labelled"));
    const body = T.clusters.map((c, r) => {
      const counts = T.counts[r], total = counts.reduce((a, b) => a + b, 0);
      return el("tr", {}, el("th", { class: "row", title: v.names.get(c) }, el("span", { class: "swatch", style: `background:${colour(c)}` }), " ", v.names.get(c)),
        counts.map((n, j) => {
          const share = total ? n / total : 0;
          return el("td", {
            class: (n ? "hit" : "") + (String(mapping[String(c)]) === T.labels[j] ? " match" : ""),
            style: `background:rgba(37,99,235,${(share * 0.85).toFixed(3)});color:${share > 0.5 ? "#fff" : "inherit"}`,
            title: `${v.names.get(c)} × ${T.labels[j]}: ${n} of ${total} (${(100 * share).toFixed(1)}%)`,
            onclick: n ? () => openCell(c, j) : null,
          }, n ? String(n) : "");
        }), el("td", {}, String(total)));
    });
    $("table").replaceChildren(el("thead", {}, head), el("tbody", {}, body));
  }
  function renderTaxonomy() { // a level of a taxonomy (--levels): each coarse cluster with its children
    const C = clustering(), T = C.taxonomy, box = $("taxonomy-box");
    box.hidden = !T;
    if (!T) return;
    const index = (name) => D.clusterings.findIndex((X) => X.name === name);
    const node = (n) => el("li", { "data-level": n.level, class: n.level === C.name ? "here" : null },
      el("span", { class: "swatch", style: n.level === C.name ? `background:${colour(n.id)}` : "" }), " ",
      el("a", { href: "#", title: `${n.level}, cluster ${n.id}`, onclick: (e) => {
        e.preventDefault();
        const k = index(n.level);
        if (k >= 0) { if (k !== S.cur) setClustering(k); focusCluster(n.id); }
      } }, n.name), el("span", { class: "n" }, " " + n.size.toLocaleString()),
      n.children.length ? el("ul", {}, n.children.map(node)) : null);
    $("taxonomy-levels").textContent = "levels, coarse to fine: " + T.levels.join(" > ");
    $("taxonomy").replaceChildren(el("ul", {}, T.clusters.map(node)));
  }
  function renderCards() {
    const C = clustering(), v = view(), total = C.ids.length;
    const cards = [];
    let visible = 0;
    for (const card of C.cards) {
      const members = v.members.get(card.id);
      let hits = 0, missing = 0;
      for (const i of members) { if (S.match && S.match[i]) hits++; if (D.items.kinds[i] === 1) missing++; }
      const nameHit = S.terms.length && S.terms.every((t) => (card.name + " " + card.raw_labels.map((r) => r[0]).join(" ")).toLowerCase().includes(t));
      const show = !S.match || hits > 0 || nameHit;
      if (show) visible++;
      const first = card.representatives.find((i) => textOf(i));
      const node = el("article", { class: "card", "data-cluster": card.id, hidden: !show, style: `--c:${colour(card.id)}` },
        el("header", {}, el("h3", {}, card.name), el("span", { class: "cid" }, card.id >= 0 && card.name !== "cluster " + card.id ? "#" + card.id : ""),
          el("span", { class: "size" }, `${card.size.toLocaleString()} item${card.size === 1 ? "" : "s"} · ${(100 * card.size / total).toFixed(1)}%`)),
        C.criterion ? el("div", { class: "muted" }, "criterion: " + C.criterion) : null,
        mostly(card.id),
        S.match ? el("div", { class: "hits" }, `${hits.toLocaleString()} match${hits === 1 ? "" : "es"}`) : null,
        el("div", { class: "row-title" }, card.id < 0 ? "some members" : "typical: nearest the centre"),
        el("div", { class: "tiles" }, card.representatives.map((i) => tile(i))),
        card.borderline.length ? el("div", { class: "row-title" }, "borderline: nearest another cluster (dot)") : null,
        card.borderline.length ? el("div", { class: "tiles" }, card.borderline.map(([i, near]) =>
          tile(i, { near, title: "nearest other cluster: " + v.names.get(near) }))) : null,
        card.raw_labels.length ? el("div", { class: "row-title" }, "the LLM's labels") : null,
        card.raw_labels.length ? el("div", { class: "chips" }, card.raw_labels.map(([l, n]) => el("span", { class: "chip" }, l, " ", el("i", {}, "×" + n)))) : null,
        first !== undefined ? el("blockquote", { class: "desc", title: D.items.paths[first] }, textOf(first)) : null,
        el("footer", {},
          el("button", { type: "button", onclick: () => openCluster(card.id) }, (card.size === 1 ? "The 1 item" : `All ${card.size.toLocaleString()} items`)),
          el("button", { type: "button", onclick: () => download(`${C.name}-${card.name}`, members) }, "CSV"),
          missing ? el("span", { class: "warn" }, `${missing} image${missing === 1 ? "" : "s"} missing`) : null));
      cards.push(node);
    }
    $("cards").replaceChildren(...cards);
    $("cards-title").textContent = S.match ? `Clusters with matches (${visible} of ${C.cards.length})` : `Clusters (${C.cards.length})`;
    document.body.dataset.cards = visible;
  }
  function mostly(c) { // the labels most of a cluster's labelled items have, from the cluster x label table
    const T = clustering().table, r = T ? T.clusters.indexOf(c) : -1;
    if (r < 0) return null;
    const counts = T.counts[r], total = counts.reduce((a, b) => a + b, 0);
    const top = counts.map((n, j) => [n, T.labels[j]]).filter(([n]) => n > 0).sort((a, b) => b[0] - a[0]).slice(0, 3);
    if (!total) return null;
    return el("div", { class: "muted", title: `labels of the ${total} labelled items` },
      "labels: " + top.map(([n, l]) => `${l} ${Math.round(100 * n / total)}%`).join(" · "));
  }
  function renderSearch() {
    const count = $("search-count"), csv = $("search-csv");
    if (!S.match) { count.textContent = ""; csv.hidden = true; document.body.dataset.matches = ""; return; }
    count.replaceChildren(el("a", { href: "#", onclick: (e) => { e.preventDefault(); openSearch(); } },
      `${S.nMatch.toLocaleString()} match${S.nMatch === 1 ? "" : "es"}`));
    csv.hidden = S.nMatch === 0;
    document.body.dataset.matches = S.nMatch;
  }

  // ---------- the drawer: a list of items and their CSV ----------
  function openDrawer(title, rows, csvName, what) {
    S.drawer = { title, rows, csvName, what };
    $("drawer-title").textContent = title;
    $("drawer-note").textContent = rows.length > SHOWN ? `Showing ${SHOWN} of ${rows.length.toLocaleString()}; the CSV holds all of them.`
      : `${rows.length.toLocaleString()} item${rows.length === 1 ? "" : "s"}`;
    $("drawer-items").replaceChildren(...rows.slice(0, SHOWN).map((i) => el("figure", {}, tile(i), el("figcaption", {}, fileName(D.items.paths[i])))));
    $("drawer-csv").onclick = () => download(csvName, rows);
    $("drawer").hidden = false;
    writeHash();
  }
  function closeDrawer() { $("drawer").hidden = true; S.drawer = null; writeHash(); }
  function openCluster(c) {
    const v = view();
    openDrawer(`${v.names.get(c)} · ${clustering().name}`, v.members.get(c), `${clustering().name}-${v.names.get(c)}`, "cluster=" + c);
  }
  function openCell(c, j) {
    const C = clustering(), T = C.table, v = view(), label = T.labels[j];
    const other = T.other && j === T.labels.length - 1, shown = new Set(T.labels.slice(0, other ? -1 : undefined));
    const rows = v.members.get(c).filter((i) => { const l = v.labelOf(i); return l && (other ? !shown.has(l) : l === label); });
    openDrawer(`${v.names.get(c)} × ${label}`, rows, `${C.name}-${v.names.get(c)}-${label}`, null);
  }
  function openSearch() { openDrawer(`Matches of “${S.q}” · ${clustering().name}`, matchedRows(), `${clustering().name}-search`, "search"); }
  function focusCluster(c) {
    S.focus = S.focus === c ? null : c;
    renderSide(); requestDraw();
    const card = document.querySelector(`.card[data-cluster="${c}"]`);
    if (card && S.focus !== null) card.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  // ---------- state in the URL: #clustering=NAME&q=TEXT&cluster=ID ----------
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const k = D.clusterings.findIndex((C) => C.name === p.get("clustering"));
    return { k: k >= 0 ? k : S.cur, q: p.get("q") || "", cluster: p.get("cluster"), csv: p.get("csv"), item: p.get("item") };
  }
  function writeHash() {
    const p = new URLSearchParams();
    p.set("clustering", clustering().name);
    if (S.q) p.set("q", S.q);
    if (S.drawer && S.drawer.what && S.drawer.what.startsWith("cluster=")) p.set("cluster", S.drawer.what.slice(8));
    history.replaceState(null, "", "#" + p.toString());
  }
  function applyHash() {
    const h = readHash();
    S.q = h.q; $("search").value = h.q;
    setClustering(h.k, true);
    if (h.cluster !== null && view().members.has(Number(h.cluster))) openCluster(Number(h.cluster));
    S.pin = h.item ? D.items.keys.findIndex((key) => key.startsWith(h.item.toLowerCase())) : -1;
    if (h.csv) $("csv-check").textContent = csvOf(S.drawer ? S.drawer.rows : S.match ? matchedRows() : clustering().ids.map((_, j) => (clustering().rows ? clustering().rows[j] : j)));
  }

  function setClustering(k, keepDrawer) {
    S.cur = k; S.focus = null;
    runSearch();
    renderSwitcher(); renderSide(); renderTable(); renderTaxonomy(); renderCards(); renderSearch();
    if (!keepDrawer) closeDrawer(); else writeHash();
    document.body.dataset.clustering = clustering().name;
    requestDraw();
  }
  function setQuery(q) {
    S.q = q.trim();
    runSearch(); renderCards(); renderSearch(); requestDraw(); writeHash();
  }

  function fail(err) {
    const box = $("error");
    box.hidden = false;
    box.textContent = "This report could not be drawn: " + (err && err.message ? err.message : err);
    console.error(err);
  }

  async function main() {
    dpr = window.devicePixelRatio || 1;
    D = await readData();
    THUMBS = JSON.parse($("cc-thumbs").textContent);
    setupMap();
    let timer = 0;
    $("search").addEventListener("input", (e) => { clearTimeout(timer); timer = setTimeout(() => setQuery(e.target.value), 150); });
    $("search-csv").onclick = () => download(`${clustering().name}-search`, matchedRows());
    $("drawer-close").onclick = closeDrawer;
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDrawer(); });
    window.addEventListener("hashchange", () => { applyHash(); draw(); pinTip(); });
    applyHash();
    draw();
    const painting = performance.now();
    draw(); // what one frame of zooming or panning costs, measured once the drawing code is warm
    document.body.dataset.drawMs = (performance.now() - painting).toFixed(1);
    pinTip();
    document.body.dataset.loadMs = Math.round(performance.now());
    document.body.dataset.ready = "1";
  }
  main().catch(fail);
})();
