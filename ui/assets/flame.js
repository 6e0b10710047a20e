// The interactive flame graph (icicle layout: the root on top), drawn on a canvas.
//
// The tree is flattened once into arrays (depth, offset, total, self, children), so drawing is a
// walk that stops at frames narrower than a pixel: a profile of 100k nodes draws only what can be
// seen. Zoom (click), search (highlight and matched share) and hover (self and total) work on the
// flat arrays. Nothing of a frame name is ever parsed as markup.
"use strict";

PW.ROW = 18;

// Flattens {name, self, total, children, ...extra} into columnar arrays, depth-first.
PW.flattenTree = function (root, extra) {
  const names = [];
  const parent = [];
  const depth = [];
  const x = [];
  const total = [];
  const self = [];
  const childStart = [];
  const childCount = [];
  const ex = {};
  for (const k of extra || []) ex[k] = [];
  // Breadth-first so that children of a node are contiguous.
  const queue = [root];
  const qParent = [-1];
  const qX = [0];
  const qDepth = [0];
  let maxDepth = 0;
  for (let i = 0; i < queue.length; i++) {
    const n = queue[i];
    names.push(n.name);
    parent.push(qParent[i]);
    depth.push(qDepth[i]);
    x.push(qX[i]);
    total.push(n.total || 0);
    self.push(n.self || 0);
    for (const k of extra || []) ex[k].push(n[k] || 0);
    if (qDepth[i] > maxDepth) maxDepth = qDepth[i];
    const kids = n.children || [];
    childStart.push(queue.length);
    childCount.push(kids.length);
    let off = qX[i];
    for (const c of kids) {
      queue.push(c);
      qParent.push(i);
      qX.push(off);
      qDepth.push(qDepth[i] + 1);
      off += c.total || 0;
    }
    queue[i] = null;
  }
  return { names, parent, depth, x, total, self, childStart, childCount, extra: ex, maxDepth, count: names.length };
};

// Hash of a name → a warm colour (stable across loads).
PW.warm = function (name) {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  const u = (h >>> 0) / 4294967296;
  const hue = 5 + Math.floor(u * 45);
  const light = 52 + Math.floor(((h >>> 8) & 15) * 1.2);
  return "hsl(" + hue + ",85%," + light + "%)";
};

// opts: {tree, colorOf(i, flat), tooltip(i, flat) -> [lines], onZoom(pathString), zoom: path, search}
PW.Flame = class {
  constructor(container, opts) {
    this.opts = opts;
    this.flat = PW.flattenTree(opts.tree, opts.extra);
    this.zoom = 0;
    this.matches = null;
    this.colors = new Array(this.flat.count);
    this.canvas = PW.el("canvas", { class: "flame", tabindex: 0 });
    this.status = PW.el("div", { class: "flame-status" });
    this.wrap = PW.el("div", { class: "flame-wrap" }, this.status, this.canvas);
    container.appendChild(this.wrap);
    this.ctx = this.canvas.getContext("2d");
    this.font = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    this.ctx.font = this.font;
    this.charW = this.ctx.measureText("mmmmmmmmmm").width / 10;
    if (opts.zoom) this.zoom = this.findPath(opts.zoom);
    if (opts.search) this.search(opts.search, true);
    this.canvas.addEventListener("mousemove", (ev) => this.onMove(ev));
    this.canvas.addEventListener("mouseleave", () => {
      document.getElementById("tooltip").hidden = true;
      this.hover = -1;
    });
    this.canvas.addEventListener("click", (ev) => {
      const i = this.hit(ev);
      if (i >= 0) this.zoomTo(i);
    });
    this.resizeObserver = new ResizeObserver(() => {
      if (this.lastWidth !== this.canvas.clientWidth) this.draw();
    });
    this.resizeObserver.observe(this.wrap);
  }

  path(i) {
    const parts = [];
    for (let n = i; n > 0; n = this.flat.parent[n]) parts.push(this.flat.names[n]);
    return parts.reverse();
  }

  // A node by its path of names (as kept in the URL), or the root.
  findPath(pathJson) {
    let names;
    try {
      names = JSON.parse(pathJson);
    } catch (_) {
      return 0;
    }
    if (!Array.isArray(names)) return 0;
    let n = 0;
    for (const name of names) {
      const f = this.flat;
      let found = -1;
      for (let c = f.childStart[n]; c < f.childStart[n] + f.childCount[n]; c++) {
        if (f.names[c] === name) {
          found = c;
          break;
        }
      }
      if (found < 0) break;
      n = found;
    }
    return n;
  }

  zoomTo(i) {
    this.zoom = i;
    this.draw();
    if (this.opts.onZoom) this.opts.onZoom(i === 0 ? "" : JSON.stringify(this.path(i)));
  }

  // Highlights frames whose name contains `term` (case-insensitive; /re/ for a regular expression).
  search(term, quiet) {
    const f = this.flat;
    if (!term) {
      this.matches = null;
      this.matchedShare = 0;
    } else {
      let test;
      const re = /^\/(.+)\/$/.exec(term);
      if (re) {
        try {
          const r = new RegExp(re[1], "i");
          test = (s) => r.test(s);
        } catch (_) {
          test = () => false;
        }
      } else {
        const t = term.toLowerCase();
        test = (s) => s.toLowerCase().includes(t);
      }
      const cache = new Map();
      this.matches = new Uint8Array(f.count);
      let matched = 0;
      // In breadth-first order a parent comes before its children: count a match once, at its
      // topmost matched frame.
      const under = new Uint8Array(f.count);
      for (let i = 0; i < f.count; i++) {
        const name = f.names[i];
        let m = cache.get(name);
        if (m === undefined) {
          m = test(name);
          cache.set(name, m);
        }
        const p = f.parent[i];
        if (p >= 0 && under[p]) under[i] = 1;
        if (m) {
          this.matches[i] = 1;
          if (!under[i]) matched += f.total[i];
          under[i] = 1;
        }
      }
      this.matchedShare = f.total[0] > 0 ? matched / f.total[0] : 0;
    }
    if (!quiet) this.draw();
    return this.matchedShare;
  }

  color(i) {
    let c = this.colors[i];
    if (c === undefined) {
      c = this.opts.colorOf ? this.opts.colorOf(i, this.flat) : PW.warm(this.flat.names[i]);
      this.colors[i] = c;
    }
    return c;
  }

  draw() {
    const f = this.flat;
    const width = Math.max(300, this.canvas.clientWidth || this.wrap.clientWidth || 960);
    this.lastWidth = width;
    const dpr = window.devicePixelRatio || 1;
    const rows = Math.min(f.maxDepth + 1, Math.floor(30000 / (PW.ROW * dpr)));
    const height = rows * PW.ROW;
    this.canvas.width = Math.floor(width * dpr);
    this.canvas.height = Math.floor(height * dpr);
    this.canvas.style.height = height + "px";
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = this.font;
    ctx.textBaseline = "middle";
    const z = this.zoom;
    const x0 = f.x[z];
    const span = f.total[z] || 1;
    const scale = width / span;
    this.scale = scale;
    this.x0 = x0;
    let drawn = 0;
    // Ancestors of the zoomed frame span the width, faded.
    for (let a = f.parent[z]; a >= 0; a = f.parent[a]) {
      this.box(a, 0, width, true);
      drawn++;
    }
    const stack = [z];
    while (stack.length) {
      const i = stack.pop();
      const px = (f.x[i] - x0) * scale;
      const pw = f.total[i] * scale;
      if (pw < 0.4 || f.depth[i] >= rows) continue;
      this.box(i, px, pw, false);
      drawn++;
      const s = f.childStart[i];
      for (let c = s + f.childCount[i] - 1; c >= s; c--) stack.push(c);
    }
    this.drawn = drawn;
    const parts = [f.count + " frames, " + drawn + " drawn"];
    if (z !== 0) parts.push("zoomed on " + f.names[z] + " (click the top row to zoom out)");
    if (this.matches) parts.push("search matches " + PW.fmtShare(this.matchedShare) + " of all samples");
    this.status.textContent = parts.join(" · ");
    this.wrap.dataset.drawn = String(drawn);
    this.wrap.dataset.zoom = f.names[z];
    this.wrap.dataset.matched = this.matches ? this.matchedShare.toFixed(6) : "";
  }

  box(i, px, pw, faded) {
    const ctx = this.ctx;
    const y = this.flat.depth[i] * PW.ROW;
    let fill;
    if (this.matches) fill = this.matches[i] ? "#e64980" : "#dee2e6";
    else fill = this.color(i);
    ctx.globalAlpha = faded ? 0.5 : 1;
    ctx.fillStyle = fill;
    ctx.fillRect(px, y, Math.max(pw - (pw > 3 ? 1 : 0), 0.5), PW.ROW - 1);
    if (pw > 3 * this.charW + 6) {
      const name = this.flat.names[i];
      const fit = Math.floor((pw - 6) / this.charW);
      ctx.fillStyle = "#111";
      ctx.fillText(name.length > fit ? name.slice(0, Math.max(fit - 1, 1)) + "…" : name, px + 3, y + PW.ROW / 2);
    }
    ctx.globalAlpha = 1;
  }

  // The frame under the pointer, or -1.
  hit(ev) {
    const f = this.flat;
    const r = this.canvas.getBoundingClientRect();
    const mx = ev.clientX - r.left;
    const depth = Math.floor((ev.clientY - r.top) / PW.ROW);
    const z = this.zoom;
    if (depth < f.depth[z]) {
      let a = z;
      while (a >= 0 && f.depth[a] > depth) a = f.parent[a];
      return a;
    }
    const xv = this.x0 + mx / this.scale;
    let n = z;
    if (xv < f.x[n] || xv >= f.x[n] + f.total[n]) return -1;
    while (f.depth[n] < depth) {
      let next = -1;
      const s = f.childStart[n];
      for (let c = s; c < s + f.childCount[n]; c++) {
        if (xv >= f.x[c] && xv < f.x[c] + f.total[c]) {
          next = c;
          break;
        }
      }
      if (next < 0) return -1;
      n = next;
    }
    return n;
  }

  onMove(ev) {
    const i = this.hit(ev);
    const tip = document.getElementById("tooltip");
    if (i < 0) {
      tip.hidden = true;
      this.canvas.style.cursor = "default";
      return;
    }
    this.canvas.style.cursor = "pointer";
    if (i !== this.hover) {
      this.hover = i;
      PW.clear(tip);
      const lines = this.opts.tooltip ? this.opts.tooltip(i, this.flat) : [this.flat.names[i]];
      lines.forEach((l, k) => tip.appendChild(PW.el("div", { class: k === 0 ? "fn" : null }, l)));
    }
    PW.showTip(ev);
  }

  destroy() {
    this.resizeObserver.disconnect();
  }
};

// Merges a baseline and a candidate tree by path for a differential flame graph: widths are the
// candidate's, `btotal`/`bself` the baseline's at the same path.
PW.mergeDiff = function (base, cand) {
  const merge = (b, c) => {
    const out = {
      name: (c || b).name,
      total: c ? c.total : 0,
      self: c ? c.self : 0,
      btotal: b ? b.total : 0,
      bself: b ? b.self : 0,
      children: [],
    };
    const byName = new Map();
    for (const k of (b && b.children) || []) byName.set(k.name, [k, null]);
    for (const k of (c && c.children) || []) {
      const e = byName.get(k.name);
      if (e) e[1] = k;
      else byName.set(k.name, [null, k]);
    }
    for (const [bk, ck] of byName.values()) {
      if (ck) out.children.push(merge(bk, ck));
    }
    return out;
  };
  return merge(base, cand);
};

// Red where a frame's share grew, blue where it shrank, by how much relative to `scale`.
PW.diffColor = function (delta, scale) {
  const t = Math.min(1, Math.abs(delta) / (scale || 1));
  if (t < 0.02) return "hsl(0,0%,88%)";
  const light = Math.round(90 - t * 42);
  return delta > 0 ? "hsl(0,80%," + light + "%)" : "hsl(215,80%," + light + "%)";
};
