// Lifeline board: live updates over server-sent events. The server sends only the rows that
// changed, already rendered; this script puts each row in its site's table, worst first, keeps
// the counts, and says plainly when the live connection is lost. No framework, no build step.
(function () {
  "use strict";
  var board = document.getElementById("board");
  var live = document.getElementById("live");
  if (!board || !window.EventSource) { return; }
  var filterSite = board.dataset.filterSite || "";
  var filterState = board.dataset.filterState || "";
  var lastMessage = Date.now();
  var connected = false;

  function setLive(ok, text) {
    live.className = "live " + (ok ? "ok" : "lost");
    live.querySelector(".text").textContent = text;
  }

  function lost(reason) {
    connected = false;
    var at = new Date(lastMessage).toLocaleTimeString();
    setLive(false, "Live updates lost (" + reason + ") — this page may be out of date since " + at + ". Reconnecting…");
  }

  function siteSection(site) {
    var sections = board.querySelectorAll("section.site");
    for (var i = 0; i < sections.length; i++) {
      if (sections[i].dataset.site === site) { return sections[i]; }
    }
    var made = document.getElementById("site-template").content.firstElementChild.cloneNode(true);
    made.dataset.site = site;
    made.querySelector("h2").textContent = site || "(no site)";
    var empty = board.querySelector("p.empty");
    if (empty) { empty.remove(); }
    board.appendChild(made);
    return made;
  }

  function rowKey(tr) { return [Number(tr.dataset.rank), tr.dataset.key]; }
  function before(a, b) { return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]); }

  function place(tbody, tr) {
    var key = rowKey(tr);
    var rows = tbody.children;
    for (var i = 0; i < rows.length; i++) {
      if (rows[i] !== tr && before(key, rowKey(rows[i]))) { tbody.insertBefore(tr, rows[i]); return; }
    }
    tbody.appendChild(tr);
  }

  function sortSites() {
    var sections = Array.prototype.slice.call(board.querySelectorAll("section.site"));
    sections.forEach(function (s) { if (!s.querySelector("tbody tr")) { s.remove(); } });
    sections = Array.prototype.slice.call(board.querySelectorAll("section.site"));
    sections.sort(function (a, b) {
      var ra = a.querySelector("tbody tr"), rb = b.querySelector("tbody tr");
      var ka = [Number(ra.dataset.rank), a.dataset.site], kb = [Number(rb.dataset.rank), b.dataset.site];
      return before(ka, kb) ? -1 : before(kb, ka) ? 1 : 0;
    });
    sections.forEach(function (s) { board.appendChild(s); });
  }

  function apply(message) {
    if (message.full) {
      // A fresh start after a gap: rows the server no longer lists go.
      var listed = {};
      message.rows.forEach(function (item) { listed["row-" + item.id] = true; });
      Array.prototype.slice.call(board.querySelectorAll("tbody tr")).forEach(function (tr) {
        if (!listed[tr.id]) { tr.remove(); }
      });
    }
    message.rows.forEach(function (item) {
      var old = document.getElementById("row-" + item.id);
      if (item.removed || (filterSite && item.site !== filterSite) || (filterState && item.state !== filterState)) {
        if (old) { old.remove(); }
        return;
      }
      var holder = document.createElement("tbody");
      holder.innerHTML = item.html;
      var tr = holder.firstElementChild;
      if (old) { old.remove(); }
      if (!message.full) { tr.classList.add("flash"); }
      place(siteSection(item.site).querySelector("tbody"), tr);
    });
    sortSites();
    Object.keys(message.counts).forEach(function (state) {
      var el = document.querySelector('[data-count="' + state + '"] b');
      if (el) { el.textContent = message.counts[state]; }
    });
    localize(board);
  }

  function localize(root) {
    var items = root.querySelectorAll("time[data-ts]");
    for (var i = 0; i < items.length; i++) {
      var t = new Date(Number(items[i].dataset.ts) * 1000);
      items[i].textContent = t.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
      items[i].title = t.toString();
    }
  }

  var source = new EventSource("/board/events?v=" + encodeURIComponent(board.dataset.version));
  source.addEventListener("open", function () {
    connected = true;
    lastMessage = Date.now();
    setLive(true, "Live");
  });
  source.addEventListener("rows", function (event) {
    lastMessage = Date.now();
    if (!connected) { connected = true; setLive(true, "Live"); }
    apply(JSON.parse(event.data));
  });
  source.addEventListener("ping", function () {
    lastMessage = Date.now();
    if (!connected) { connected = true; setLive(true, "Live"); }
  });
  source.addEventListener("reload", function () { window.location.reload(); });
  source.addEventListener("logout", function () { window.location.href = "/login"; });
  source.addEventListener("error", function () { lost("no connection to the collector"); });
  // The server sends at least a ping every few seconds: a silent stream is a lost one even when
  // the browser has not noticed (a proxy holding the connection open, a sleeping network).
  window.setInterval(function () {
    if (connected && Date.now() - lastMessage > 12000) { lost("nothing heard for 12 s"); }
  }, 2000);
  localize(document);
})();
