/* The model's queue: every Dash callback request of this tab carries the tab's id (X-Client-Id),
   which the UI server passes on to the API, so the API can say where this tab's requests stand
   in line and let this tab cancel its own evaluation. A new id per page load: a reloaded tab no
   longer waits for what it asked before. */
(function () {
  const bytes = window.crypto.getRandomValues(new Uint8Array(12));
  const tab = "tab-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const plainFetch = window.fetch.bind(window);
  window.fetch = function (resource, init) {
    const url = typeof resource === "string" ? resource : resource && resource.url;
    if (url && url.includes("_dash-update-component")) {
      init = Object.assign({}, init);
      const headers = new Headers(init.headers || {});
      headers.set("X-Client-Id", tab);
      init.headers = headers;
    }
    return plainFetch(resource, init);
  };
})();
