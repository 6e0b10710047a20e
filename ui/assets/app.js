// The router: #/page?params → PW.pages[page]. The header's range, metric and token apply to
// every page and live in the URL (range, metric) or in localStorage (token).
"use strict";

(function () {
  const ROUTES = {
    "/": "overview",
    "/endpoint": "endpoint",
    "/flame": "flame",
    "/compare": "compare",
    "/regressions": "regressions",
    "/regression": "regression",
  };
  const main = document.getElementById("main");
  let generation = 0;
  let leaving = [];

  function render() {
    generation++;
    const mine = generation;
    for (const f of leaving) f();
    leaving = [];
    document.getElementById("tooltip").hidden = true;
    const { path, params } = PW.parseHash();
    const page = ROUTES[path];
    const g = PW.globals(params);
    document.getElementById("range").value = g.range;
    document.getElementById("metric").value = g.metric;
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === page || (page === "regression" && a.dataset.nav === "regressions"));
    }
    PW.clear(main);
    main.dataset.page = page || "missing";
    main.dataset.state = "loading";
    if (!page) {
      main.appendChild(PW.message("No such page. Go to the overview."));
      main.dataset.state = "ready";
      return;
    }
    document.title = "profwatch · " + page;
    const ctx = { live: () => mine === generation, onLeave: (f) => leaving.push(f) };
    const loading = PW.message("loading…", "dim");
    main.appendChild(loading);
    PW.pages[page](main, params, ctx).then(() => {
      if (!ctx.live()) return;
      if (loading.parentNode) loading.remove();
      main.dataset.state = "ready";
    }, (e) => {
      if (!ctx.live()) return;
      if (loading.parentNode) loading.remove();
      PW.showError(main, e);
      main.dataset.state = "error";
    });
  }

  function setGlobal(key, value) {
    const { path, params } = PW.parseHash();
    params.set(key, value);
    location.hash = "#" + path + "?" + params.toString();
  }

  document.getElementById("range").addEventListener("change", (e) => {
    const { path, params } = PW.parseHash();
    params.delete("from");
    params.delete("to");
    params.set("range", e.target.value);
    location.hash = "#" + path + "?" + params.toString();
  });
  document.getElementById("metric").addEventListener("change", (e) => setGlobal("metric", e.target.value));
  const tokenInput = document.getElementById("token");
  tokenInput.value = PW.token();
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    try {
      if (tokenInput.value) localStorage.setItem("profwatch.token", tokenInput.value);
      else localStorage.removeItem("profwatch.token");
    } catch (_) { /* storage disabled: the token lasts for this page only */ }
    render();
  });
  window.addEventListener("hashchange", render);
  render();
})();
