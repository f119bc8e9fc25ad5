// A little JavaScript where it earns its place: live operation progress, self-refreshing parts
// of a page, and forms that cannot be submitted twice by a double click.
(function () {
  "use strict";

  function followOperation(section) {
    const url = section.dataset.progressUrl;
    let after = Number(section.dataset.lastLine || 0);
    const log = document.getElementById("op-log");
    const bar = document.getElementById("op-bar");
    const state = document.getElementById("op-state");
    const error = document.getElementById("op-error");
    async function tick() {
      let data;
      try {
        const response = await fetch(url + "?after=" + after, { headers: { Accept: "application/json" } });
        data = await response.json();
      } catch (e) {
        setTimeout(tick, 2000);
        return;
      }
      for (const line of data.lines) {
        const span = document.createElement("span");
        span.textContent = line.at + "  " + line.text + "\n";
        log.appendChild(span);
        after = line.id;
      }
      if (data.lines.length) log.scrollTop = log.scrollHeight;
      bar.style.width = data.progress + "%";
      bar.parentElement.setAttribute("aria-valuenow", data.progress);
      state.textContent = data.state;
      state.className = "state s-" + data.state;
      error.textContent = data.error || "";
      if (!data.finished) setTimeout(tick, 1000);
      else section.dataset.finished = "true";
    }
    tick();
  }

  function pollPart(el) {
    const every = Number(el.dataset.pollMs || 3000);
    async function tick() {
      try {
        const response = await fetch(el.dataset.pollUrl);
        if (response.ok) el.innerHTML = await response.text();
      } catch (e) { /* try again next tick */ }
      setTimeout(tick, every);
    }
    setTimeout(tick, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const op = document.getElementById("operation");
    if (op) followOperation(op);
    document.querySelectorAll("[data-poll-url]").forEach(pollPart);
    document.querySelectorAll("form[data-once]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
        if (form.dataset.sent) { event.preventDefault(); return; }
        form.dataset.sent = "1";
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      });
    });
  });
})();
