// @ts-check
// A table whose columns sort on click.

import { clear, el } from "./dom.js";
import { naturalCompare } from "./format.js";

/** @import { Child } from "./dom.js" */

/**
 * A column: `value` sorts (numbers as numbers, anything else naturally) and, without `cell`,
 * is shown as text; `num` right-aligns and sorts largest first on the first click.
 * @template R
 * @typedef {object} Column
 * @property {string} key
 * @property {string} label
 * @property {(row: R) => unknown} value
 * @property {(row: R) => Child} [cell]
 * @property {boolean} [num]
 */

/**
 * @template R
 * @param {Column<R>[]} cols
 * @param {R[]} rows
 * @param {{key: string, desc: boolean}} [initial] the first sort; none keeps the rows' order
 */
export function sortableTable(cols, rows, initial) {
  let sortKey = initial && initial.key;
  let desc = initial ? initial.desc : true;
  const tbody = el("tbody");
  const heads = cols.map((c) =>
    el("th", {
      class: (c.num ? "num " : "") + "sortable",
      dataset: { key: c.key },
      onclick: () => {
        if (sortKey === c.key) desc = !desc;
        else {
          sortKey = c.key;
          desc = !!c.num;
        }
        draw();
      },
    }, c.label));
  const draw = () => {
    const col = cols.find((c) => c.key === sortKey);
    const sorted = rows.slice();
    if (col) {
      sorted.sort((a, b) => {
        const x = col.value(a);
        const y = col.value(b);
        const r = typeof x === "number" && typeof y === "number" ? x - y : naturalCompare(x, y);
        return desc ? -r : r;
      });
    }
    for (const h of heads) {
      h.classList.toggle("sorted", h.dataset.key === sortKey);
      h.classList.toggle("desc", h.dataset.key === sortKey && desc);
    }
    clear(tbody);
    const frag = document.createDocumentFragment();
    for (const r of sorted) {
      frag.appendChild(el("tr", null, cols.map((c) =>
        el("td", { class: c.num ? "num" : null }, c.cell ? c.cell(r) : String(c.value(r))))));
    }
    tbody.appendChild(frag);
  };
  draw();
  return el("table", { class: "data" }, el("thead", null, el("tr", null, heads)), tbody);
}
