// Position page: local times, and the browser's time zone for maintenance windows.
(function () {
  "use strict";
  var items = document.querySelectorAll("time[data-ts]");
  for (var i = 0; i < items.length; i++) {
    var t = new Date(Number(items[i].dataset.ts) * 1000);
    items[i].textContent = t.toLocaleString([], {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"});
    items[i].title = t.toString();
  }
  var zones = document.querySelectorAll("input.tz");
  for (var j = 0; j < zones.length; j++) { zones[j].value = String(new Date().getTimezoneOffset()); }
})();
