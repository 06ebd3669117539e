// The dashboard's only script: no build step, no inline code (the CSP forbids it).
// Live parts: an element with data-live="URL" is replaced by that URL's HTML every 3 s
// while the tab is visible. The select-all box of the dead-letter page.
"use strict";
(function () {
  function refresh(box) {
    if (document.hidden) return;
    fetch(box.dataset.live, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        // Parsed inertly, then moved in: the fragment is server-rendered and escaped.
        var doc = new DOMParser().parseFromString(html, "text/html");
        box.replaceChildren.apply(box, Array.from(doc.body.childNodes));
        box.dataset.refreshed = String(Date.now());
      })
      .catch(function () { box.classList.add("stale"); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (box) {
      setInterval(function () { refresh(box); }, 3000);
    });
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll('input[name="ids"][form="bulk"]').forEach(function (box) {
          box.checked = all.checked;
        });
      });
    }
  });
})();
