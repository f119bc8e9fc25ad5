// Copy buttons. A button[data-copy-from=ID] copies the text of element ID; it stays hidden without JavaScript,
// where it could do nothing. A form[data-copy-key-url] is the reveal form for a scoring key: without JavaScript
// it opens the reveal page; with it, the key is read from that URL (the same audited reveal: one history entry
// per copy) and goes to the clipboard without being shown.
(function () {
  "use strict";

  function status(text) {
    const region = document.getElementById("consume-status");
    if (region) region.textContent = text;
  }

  async function writeClipboard(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain http to a host other than localhost is not a secure context: no Clipboard API there, but the
    // older copy command still works during a click.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) throw new Error("the browser did not allow copying");
  }

  function flash(button, text) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = text;
    clearTimeout(Number(button.dataset.timer || 0));
    button.dataset.timer = String(setTimeout(function () { button.textContent = button.dataset.label; }, 2000));
  }

  async function copyText(button) {
    const source = document.getElementById(button.dataset.copyFrom);
    try {
      await writeClipboard(source.textContent);
      flash(button, "Copied");
      status("Copied to the clipboard.");
    } catch (e) {
      status("Could not copy: " + e.message + ". Select the text and copy it by hand.");
    }
  }

  async function copyKey(form, event) {
    event.preventDefault();
    const button = form.querySelector("button");
    if (button.disabled) return;
    button.disabled = true;
    try {
      const response = await fetch(form.dataset.copyKeyUrl, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      let body = {};
      try { body = await response.json(); } catch (e) { /* a refusal page, not JSON */ }
      if (!response.ok || !body.key) {
        status("Could not copy the key: " + (body.message || response.status + " " + response.statusText) + ".");
        return;
      }
      await writeClipboard(body.key);
      flash(button, "Copied");
      status("The full key is on the clipboard; the reveal was recorded in the history.");
    } catch (e) {
      status("Could not copy the key: " + e.message + ". Use Reveal in the Keys section instead.");
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy-from]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copyText(button); });
    });
    document.querySelectorAll("form[data-copy-key-url]").forEach(function (form) {
      const button = form.querySelector("button");
      if (button.dataset.jsLabel) button.textContent = button.dataset.jsLabel;
      form.addEventListener("submit", function (event) { copyKey(form, event); });
    });
  });
})();
