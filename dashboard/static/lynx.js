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

  function submitButtons(form) {
    return Array.from(form.elements).filter(function (el) {
      return (el.tagName === "BUTTON" || el.tagName === "INPUT") && el.type === "submit";
    });
  }

  // A form sent once cannot be sent again by a double click. The browser builds the form's data after
  // the submit handlers run and leaves disabled buttons out of it, so disabling the buttons here would
  // drop the pressed button's name: "Check" would arrive as a plain submit, which deploys (on Azure, a
  // billed GPU service). The pressed button's name=value therefore travels in a hidden input.
  function sendOnce(form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
      const submitter = event.submitter;
      if (submitter && submitter.name) {
        const carried = document.createElement("input");
        carried.type = "hidden";
        carried.name = submitter.name;
        carried.value = submitter.value;
        carried.dataset.submitter = "";
        form.appendChild(carried);
      }
      submitButtons(form).forEach(function (b) {
        if (!b.disabled) { b.disabled = true; b.dataset.sentDisabled = ""; }
      });
    });
  }

  // A setting that matters only while its switch is on (autoscale's range, the GPU count) is disabled while
  // it is off; the server renders the starting state (deployments/forms.py: SWITCHED_FIELDS).
  function followSwitch(field) {
    const toggle = field.form && field.form.elements.namedItem(field.dataset.switchedBy);
    if (!toggle) return;
    function sync() { field.disabled = !toggle.checked; }
    toggle.addEventListener("change", sync);
    sync();
  }

  // Back and forward bring a page out of the browser's cache as it was left: sent, buttons disabled,
  // the pressed button carried. Make it a fresh form again (buttons the server disabled stay disabled).
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-once]").forEach(function (form) {
      delete form.dataset.sent;
      form.querySelectorAll("input[data-submitter]").forEach(function (input) { input.remove(); });
      submitButtons(form).forEach(function (b) {
        if (!("sentDisabled" in b.dataset)) return;
        b.disabled = false;
        delete b.dataset.sentDisabled;
      });
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    const op = document.getElementById("operation");
    if (op) followOperation(op);
    document.querySelectorAll("[data-poll-url]").forEach(pollPart);
    document.querySelectorAll("form[data-once]").forEach(sendOnce);
    document.querySelectorAll("[data-switched-by]").forEach(followSwitch);
  });
})();
