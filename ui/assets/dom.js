// @ts-check
// Building DOM nodes safely: every string becomes a text node or one attribute value, set one by
// one; nothing is ever parsed as markup.

/**
 * What `el` and `svg` take as children: nodes, text (numbers shown as text), nested lists, and
 * null, undefined or false for nothing.
 * @typedef {Node | string | number | null | undefined | false | ChildList} Child
 * @typedef {Child[]} ChildList
 */

/**
 * Attributes: `text` sets textContent, `dataset` an object of data-*, `style` the inline style,
 * `on*` a listener; null, undefined and false leave an attribute out, true sets it empty.
 * @typedef {Record<string, unknown>} Attrs
 */

export const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * el("div", {class: "x", onclick: f}, child, "text", [children]) builds an HTML element.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs | null} [attrs]
 * @param {Child[]} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/**
 * Like `el`, for an SVG element.
 * @template {keyof SVGElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs | null} [attrs]
 * @param {Child[]} children
 * @returns {SVGElementTagNameMap[K]}
 */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/**
 * @param {HTMLElement | SVGElement} node
 * @param {Attrs | null | undefined} attrs
 */
function setAttrs(node, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), /** @type {EventListener} */ (v));
    else if (k === "text") node.textContent = String(v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") node.style.cssText = String(v); // CSSOM: allowed by the page's CSP
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}

/**
 * Appends children (see `Child`) as nodes or text nodes.
 * @param {Node} node
 * @param {Child[]} children
 */
export function append(node, children) {
  for (const c of children) {
    if (Array.isArray(c)) append(node, c);
    else if (c !== undefined && c !== null && c !== false) {
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
}

/**
 * Removes every child.
 * @template {Node} N
 * @param {N} node
 * @returns {N}
 */
export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/**
 * The element with this id, of this type; throws when the page has none.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
export function byId(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error("the page has no " + type.name + " #" + id);
  return node;
}

/**
 * A line of text for the user.
 * @param {string} text
 * @param {string} [cls] extra class: dim, warn, error
 */
export function message(text, cls) {
  return el("p", { class: "msg " + (cls || "") }, text);
}

/**
 * Shows an error (an Error's message, or anything as text) at the end of `container`.
 * @param {Node} container
 * @param {unknown} e
 */
export function showError(container, e) {
  append(container, [el("p", { class: "msg error", role: "alert" }, errorText(e))]);
}

/**
 * An error's message, or the thrown value itself as text.
 * @param {unknown} e
 * @returns {string}
 */
function errorText(e) {
  const m = e && typeof e === "object" && "message" in e ? e.message : undefined;
  return String(m || e);
}
