// The pending page updates itself: every few seconds it asks for the list's HTML and
// swaps it in only when it changed, so scroll position, focus and typing elsewhere on
// the page are kept. Times left are counted down here between refreshes. The tab's
// title counts what you may decide, "(2) Pending", so a tab in the background tells you
// something waits: it keeps refreshing there too, six times less often. No other
// script runs on these pages.
(function () {
  "use strict";

  function span(seconds) {
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m";
    return s + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = Math.floor((Date.parse(el.getAttribute("data-deadline")) - now) / 1000);
      var out = el.querySelector(".left");
      if (out) out.textContent = left > 0 ? span(left) + " left" : "deadline passed";
      el.classList.toggle("soon", left < 600);
    });
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var ago = Math.max(0, Math.floor((now - Date.parse(el.getAttribute("data-since"))) / 1000));
      var out = el.parentNode.querySelector(".ago");
      if (out) out.textContent = span(ago) + " ago";
    });
  }

  function poll(list) {
    var url = list.getAttribute("data-refresh");
    var every = Math.max(1, parseFloat(list.getAttribute("data-interval") || "5")) * 1000;
    var status = document.getElementById("live-status");
    var last = null;
    var busy = false;
    var fetched = 0;
    var title = document.title.replace(/^\(\d+\) /, "");

    // What you may decide: items neither read-only to you nor already being posted.
    function count() {
      var n = list.querySelectorAll("article.item:not(.readonly):not(.inflight)").length;
      document.title = (n ? "(" + n + ") " : "") + title;
    }

    // Times are counted down here: a refresh that differs only in them changes nothing.
    function stable(html) {
      return html.replace(/<span class="(left|ago)">[^<]*<\/span>/g, "");
    }

    function say(text, stale) {
      if (!status) return;
      status.textContent = text;
      status.classList.toggle("stale", !!stale);
    }

    function refresh() {
      if (busy || (document.hidden && Date.now() - fetched < every * 6)) return;
      busy = true;
      fetched = Date.now();
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401) { say("Your session ended: reload the page to log in again.", true); return null; }
          if (!r.ok) { say("Could not update (" + r.status + "); retrying.", true); return null; }
          return r.text();
        })
        .then(function (html) {
          if (html === null || html === undefined) return;
          var key = stable(html);
          if (key !== last) {
            list.innerHTML = html;
            tick();
            count();
          }
          last = key;
          say("Updated " + new Date().toLocaleTimeString() + "; updates by itself.", false);
        })
        .catch(function () { say("Offline; retrying.", true); })
        .then(function () { busy = false; });
    }

    setInterval(refresh, every);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var list = document.getElementById("pending-list");
    if (list && list.getAttribute("data-refresh")) poll(list);
    var filters = document.getElementById("filters");
    if (filters) {
      filters.querySelectorAll("select").forEach(function (s) {
        s.addEventListener("change", function () { filters.submit(); });
      });
    }
  });
})();
