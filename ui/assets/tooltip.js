// @ts-check
// The one tooltip the page has (`#tooltip`), shared by the charts and the flame graph.

import { byId } from "./dom.js";

/** The tooltip element. */
export function tooltip() {
  return byId("tooltip", HTMLDivElement);
}

/**
 * Shows the tooltip next to the pointer, on the side with room for it.
 * @param {MouseEvent} ev
 */
export function showTip(ev) {
  const tip = tooltip();
  tip.hidden = false;
  const w = tip.offsetWidth;
  const left = ev.clientX + 14 + w > window.innerWidth ? ev.clientX - w - 14 : ev.clientX + 14;
  tip.style.left = Math.max(0, left) + "px";
  tip.style.top = ev.clientY + 14 + "px";
}
