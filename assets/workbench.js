/* Outlier Lab in the browser: a view's state in its URL, Enter in a slider's number box, figure export.
   Loaded by Dash from assets/ on every page. */

window.outlierLab = {
  format(value) {
    if (value === null || value === undefined) return null;
    if (Array.isArray(value)) return value.join(",");
    if (typeof value === "object") return [value.layer, value.site, value.position, value.dim].join(":");
    return value === "" ? null : String(value);
  },

  /* Set (or, for null, remove) query keys of the current URL without a page load or a history entry. */
  merge(values) {
    const url = new URL(window.location.href);
    for (const [key, value] of Object.entries(values)) {
      if (value === null || value === undefined) url.searchParams.delete(key);
      else url.searchParams.set(key, value);
    }
    if (url.href !== window.location.href) window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  },

  /* args: the page's control values in `keys` order; keys past the values (links' older
     spellings) are removed from the URL. Returns the page's own query string. */
  writeView(path, keys, args) {
    if (window.location.pathname !== path) return window.dash_clientside.no_update;
    const values = {};
    keys.forEach((key, i) => { values[key] = i < args.length ? this.format(args[i]) : null; });
    this.merge(values);
    const own = new URLSearchParams();
    keys.forEach((key) => { if (values[key] !== null) own.set(key, values[key]); });
    return own.toString();
  },
};

/* The browser session's lab notebook: an id in a session cookie, shared by the session's tabs. */
if (!document.cookie.split("; ").some((c) => c.startsWith("outlier_lab_notebook="))) {
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));  // getRandomValues works on plain http too
  const id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  document.cookie = `outlier_lab_notebook=${id}; path=/; SameSite=Strict`;
}

window.dash_clientside = Object.assign({}, window.dash_clientside, {
  outlier: {
    writeShell(query) {
      if (query) window.outlierLab.merge(query);
      return window.dash_clientside.no_update;
    },
  },
});

/* Every figure's modebar gets SVG and 300 dpi PNG buttons: 7 in wide (672 px at plotly's 96 px per
   inch, a paper's two-column width), the height in proportion, named after the figure. */
const PAPER_WIDTH_PX = 672;

function exportFigure(plot, format) {
  const layout = plot._fullLayout;
  const height = Math.max(240, Math.round(layout.height * PAPER_WIDTH_PX / layout.width));
  const filename = ((plot._context || {}).toImageButtonOptions || {}).filename || "figure";
  window.Plotly.downloadImage(plot, {format, width: PAPER_WIDTH_PX, height, scale: format === "png" ? 300 / 96 : 1, filename});
}

function addExportButtons(modebar) {
  const plot = modebar.closest(".js-plotly-plot");
  if (!plot || modebar.querySelector(".paper-export")) return;
  const group = document.createElement("div");
  group.className = "modebar-group paper-export";
  for (const [format, label] of [["svg", "Download for a paper as SVG"], ["png", "Download for a paper as PNG, 300 dpi"]]) {
    const button = document.createElement("a");
    button.className = "modebar-btn paper-export-button";
    button.setAttribute("role", "button");
    button.setAttribute("aria-label", label);
    button.setAttribute("data-title", label);
    button.textContent = format.toUpperCase();
    button.addEventListener("click", () => exportFigure(plot, format));
    group.appendChild(button);
  }
  modebar.insertBefore(group, modebar.firstChild);
}

new MutationObserver(() => document.querySelectorAll(".modebar").forEach(addExportButtons))
  .observe(document.documentElement, {childList: true, subtree: true});

/* A slider's number box commits on blur only: Enter commits too. */
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches(".dash-slider-container input[type=number]")) event.target.blur();
});
