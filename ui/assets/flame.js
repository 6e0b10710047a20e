// @ts-check
// The interactive flame graph (icicle layout: the root on top), drawn on a canvas.
//
// The tree is flattened once into arrays (depth, offset, total, self, children), so drawing is a
// walk that stops at frames narrower than a pixel: a profile of 100k nodes draws only what can be
// seen. Zoom (click), search (highlight and matched share) and hover (self and total) work on the
// flat arrays. Nothing of a frame name is ever parsed as markup.

import { clear, el } from "./dom.js";
import { fmtShare } from "./format.js";
import { showTip, tooltip } from "./tooltip.js";

/** @import { Child } from "./dom.js" */

/** The height of a frame, px. */
export const ROW = 18;

/**
 * A tree to draw: samples on the stack (`total`) and as the leaf (`self`), and any extra
 * numbers named in `FlameOptions.extra`.
 * @typedef {{name: string, total?: number, self?: number, children?: TreeNode[], [extra: string]: unknown}} TreeNode
 */

/**
 * The tree as columns, node i in breadth-first order (so the children of a node are
 * contiguous, from `childStart[i]`, `childCount[i]` of them); `x` is the samples to the left of
 * a node at its depth, `extra` the extra numbers by name.
 * @typedef {object} FlatTree
 * @property {string[]} names
 * @property {number[]} parent -1 for the root
 * @property {number[]} depth
 * @property {number[]} x
 * @property {number[]} total
 * @property {number[]} self
 * @property {number[]} childStart
 * @property {number[]} childCount
 * @property {Record<string, number[]>} extra
 * @property {number} maxDepth
 * @property {number} count
 */

/**
 * `zoom` (a JSON path of names, as kept in the URL) and `search` restore a view; `onZoom` gets
 * the zoomed node's path ("" for the root); `colorOf` and `tooltip` replace the default warm
 * colours and the name-only tooltip.
 * @typedef {object} FlameOptions
 * @property {TreeNode} tree
 * @property {string[]} [extra]
 * @property {string} [zoom]
 * @property {string} [search]
 * @property {(path: string) => void} [onZoom]
 * @property {(i: number, flat: FlatTree) => string} [colorOf]
 * @property {(i: number, flat: FlatTree) => Child[]} [tooltip]
 */

/**
 * Flattens a tree into columns (see FlatTree).
 * @param {TreeNode} root
 * @param {string[]} [extra]
 * @returns {FlatTree}
 */
export function flattenTree(root, extra) {
  /** @type {string[]} */
  const names = [];
  /** @type {number[]} */
  const parent = [];
  /** @type {number[]} */
  const depth = [];
  /** @type {number[]} */
  const x = [];
  /** @type {number[]} */
  const total = [];
  /** @type {number[]} */
  const self = [];
  /** @type {number[]} */
  const childStart = [];
  /** @type {number[]} */
  const childCount = [];
  /** @type {Record<string, number[]>} */
  const ex = {};
  for (const k of extra || []) ex[k] = [];
  // Breadth-first so that children of a node are contiguous; a node's slot in the queue is
  // emptied once it is read, so that the tree can be freed as it is flattened.
  /** @type {(TreeNode | null)[]} */
  const queue = [root];
  const qParent = [-1];
  const qX = [0];
  const qDepth = [0];
  let maxDepth = 0;
  for (let i = 0; i < queue.length; i++) {
    const n = /** @type {TreeNode} */ (queue[i]);
    names.push(n.name);
    parent.push(qParent[i]);
    depth.push(qDepth[i]);
    x.push(qX[i]);
    total.push(n.total || 0);
    self.push(n.self || 0);
    for (const k of extra || []) ex[k].push(/** @type {number | undefined} */ (n[k]) || 0);
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
}

/**
 * A warm colour for a name, stable across loads (a hash of it).
 * @param {string} name
 */
function warm(name) {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  const u = (h >>> 0) / 4294967296;
  const hue = 5 + Math.floor(u * 45);
  const light = 52 + Math.floor(((h >>> 8) & 15) * 1.2);
  return "hsl(" + hue + ",85%," + light + "%)";
}

/** The flame graph of a tree, in a new element at the end of a container. */
export class Flame {
  /**
   * @param {HTMLElement} container
   * @param {FlameOptions} opts
   */
  constructor(container, opts) {
    this.opts = opts;
    this.flat = flattenTree(opts.tree, opts.extra);
    /** The node drawn across the full width. */
    this.zoom = 0;
    /** @type {Uint8Array | null} 1 for each node whose name the search matches */
    this.matches = null;
    /** The share of all samples under a matched frame. */
    this.matchedShare = 0;
    /** @type {(string | undefined)[]} */
    this.colors = new Array(this.flat.count);
    /** The node under the pointer, or -1. */
    this.hover = -1;
    /** Pixels per sample, and the sample at the left edge, of the last draw. */
    this.scale = 1;
    this.x0 = 0;
    /** The width and the frames drawn by the last draw. */
    this.lastWidth = 0;
    this.drawn = 0;
    this.canvas = el("canvas", { class: "flame", tabindex: 0 });
    this.status = el("div", { class: "flame-status" });
    this.wrap = el("div", { class: "flame-wrap" }, this.status, this.canvas);
    container.appendChild(this.wrap);
    const ctx = this.canvas.getContext("2d");
    if (!ctx) throw new Error("this browser draws no 2D canvas");
    this.ctx = ctx;
    this.font = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    this.ctx.font = this.font;
    this.charW = this.ctx.measureText("mmmmmmmmmm").width / 10;
    if (opts.zoom) this.zoom = this.findPath(opts.zoom);
    if (opts.search) this.search(opts.search, true);
    this.canvas.addEventListener("mousemove", (ev) => this.onMove(ev));
    this.canvas.addEventListener("mouseleave", () => {
      tooltip().hidden = true;
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

  /**
   * The names from the root's child down to node i.
   * @param {number} i
   */
  path(i) {
    const parts = [];
    for (let n = i; n > 0; n = this.flat.parent[n]) parts.push(this.flat.names[n]);
    return parts.reverse();
  }

  /**
   * A node by its path of names (as kept in the URL): the deepest node the path leads to.
   * @param {string} pathJson
   */
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

  /** @param {number} i */
  zoomTo(i) {
    this.zoom = i;
    this.draw();
    if (this.opts.onZoom) this.opts.onZoom(i === 0 ? "" : JSON.stringify(this.path(i)));
  }

  /**
   * Highlights frames whose name contains `term` (case-insensitive; /re/ for a regular
   * expression); "" clears. Draws again unless `quiet`.
   * @param {string} term
   * @param {boolean} [quiet]
   * @returns {number} the matched share
   */
  search(term, quiet) {
    const f = this.flat;
    if (!term) {
      this.matches = null;
      this.matchedShare = 0;
    } else {
      const test = matcher(term);
      /** @type {Map<string, boolean>} */
      const cache = new Map();
      const matches = new Uint8Array(f.count);
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
          matches[i] = 1;
          if (!under[i]) matched += f.total[i];
          under[i] = 1;
        }
      }
      this.matches = matches;
      this.matchedShare = f.total[0] > 0 ? matched / f.total[0] : 0;
    }
    if (!quiet) this.draw();
    return this.matchedShare;
  }

  /** @param {number} i */
  color(i) {
    let c = this.colors[i];
    if (c === undefined) {
      c = this.opts.colorOf ? this.opts.colorOf(i, this.flat) : warm(this.flat.names[i]);
      this.colors[i] = c;
    }
    return c;
  }

  draw() {
    const f = this.flat;
    const width = Math.max(300, this.canvas.clientWidth || this.wrap.clientWidth || 960);
    this.lastWidth = width;
    const dpr = window.devicePixelRatio || 1;
    const rows = Math.min(f.maxDepth + 1, Math.floor(30000 / (ROW * dpr)));
    const height = rows * ROW;
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
      const i = /** @type {number} */ (stack.pop());
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
    if (this.matches) parts.push("search matches " + fmtShare(this.matchedShare) + " of all samples");
    this.status.textContent = parts.join(" · ");
    this.wrap.dataset.drawn = String(drawn);
    this.wrap.dataset.zoom = f.names[z];
    this.wrap.dataset.matched = this.matches ? this.matchedShare.toFixed(6) : "";
  }

  /**
   * Draws node i at `px`, `pw` wide, with as much of its name as fits.
   * @param {number} i
   * @param {number} px
   * @param {number} pw
   * @param {boolean} faded
   */
  box(i, px, pw, faded) {
    const ctx = this.ctx;
    const y = this.flat.depth[i] * ROW;
    let fill;
    if (this.matches) fill = this.matches[i] ? "#e64980" : "#dee2e6";
    else fill = this.color(i);
    ctx.globalAlpha = faded ? 0.5 : 1;
    ctx.fillStyle = fill;
    ctx.fillRect(px, y, Math.max(pw - (pw > 3 ? 1 : 0), 0.5), ROW - 1);
    if (pw > 3 * this.charW + 6) {
      const name = this.flat.names[i];
      const fit = Math.floor((pw - 6) / this.charW);
      ctx.fillStyle = "#111";
      ctx.fillText(name.length > fit ? name.slice(0, Math.max(fit - 1, 1)) + "…" : name, px + 3, y + ROW / 2);
    }
    ctx.globalAlpha = 1;
  }

  /**
   * The frame under the pointer, or -1.
   * @param {MouseEvent} ev
   */
  hit(ev) {
    const f = this.flat;
    const r = this.canvas.getBoundingClientRect();
    const mx = ev.clientX - r.left;
    const depth = Math.floor((ev.clientY - r.top) / ROW);
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

  /** @param {MouseEvent} ev */
  onMove(ev) {
    const i = this.hit(ev);
    const tip = tooltip();
    if (i < 0) {
      tip.hidden = true;
      this.canvas.style.cursor = "default";
      return;
    }
    this.canvas.style.cursor = "pointer";
    if (i !== this.hover) {
      this.hover = i;
      clear(tip);
      const lines = this.opts.tooltip ? this.opts.tooltip(i, this.flat) : [this.flat.names[i]];
      lines.forEach((l, k) => tip.appendChild(el("div", { class: k === 0 ? "fn" : null }, l)));
    }
    showTip(ev);
  }

  destroy() {
    this.resizeObserver.disconnect();
  }
}

/**
 * The test of a search term: a case-insensitive substring, or a regular expression between
 * slashes (one that does not compile matches nothing).
 * @param {string} term
 * @returns {(name: string) => boolean}
 */
function matcher(term) {
  const re = /^\/(.+)\/$/.exec(term);
  if (re) {
    try {
      const r = new RegExp(re[1], "i");
      return (s) => r.test(s);
    } catch (_) {
      return () => false;
    }
  }
  const t = term.toLowerCase();
  return (s) => s.toLowerCase().includes(t);
}

/**
 * A node of a differential tree: the candidate's samples, and the baseline's at the same path.
 * @typedef {object} DiffNode
 * @property {string} name
 * @property {number} total
 * @property {number} self
 * @property {number} btotal
 * @property {number} bself
 * @property {DiffNode[]} children
 */

/**
 * Merges a baseline and a candidate tree by path for a differential flame graph: widths are the
 * candidate's, `btotal`/`bself` the baseline's at the same path.
 * @param {TreeNode} base
 * @param {TreeNode} cand
 * @returns {DiffNode}
 */
export function mergeDiff(base, cand) {
  /**
   * @param {TreeNode | null} b
   * @param {TreeNode} c
   * @returns {DiffNode}
   */
  const merge = (b, c) => {
    /** @type {DiffNode} */
    const out = {
      name: c.name,
      total: c.total || 0,
      self: c.self || 0,
      btotal: b ? b.total || 0 : 0,
      bself: b ? b.self || 0 : 0,
      children: [],
    };
    /** @type {Map<string, [TreeNode | null, TreeNode | null]>} */
    const byName = new Map();
    for (const k of (b && b.children) || []) byName.set(k.name, [k, null]);
    for (const k of c.children || []) {
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
}

/**
 * Red where a frame's share grew, blue where it shrank, by how much relative to `scale`.
 * @param {number} delta
 * @param {number} scale
 */
export function diffColor(delta, scale) {
  const t = Math.min(1, Math.abs(delta) / (scale || 1));
  if (t < 0.02) return "hsl(0,0%,88%)";
  const light = Math.round(90 - t * 42);
  return delta > 0 ? "hsl(0,80%," + light + "%)" : "hsl(215,80%," + light + "%)";
}
