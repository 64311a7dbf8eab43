// Fluxgate portal: progressive enhancement only. Every page works without this file; it adds
// a copy button for secrets, a warning before leaving a secret that was not copied, and
// confirmation prompts for destructive buttons.
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn);
    } else {
      fn();
    }
  }

  onReady(function () {
    var unsaved = document.querySelector("[data-secret-unsaved]");

    document.querySelectorAll("[data-copy-target]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy-target"));
        if (!target || !navigator.clipboard) {
          return;
        }
        navigator.clipboard.writeText(target.textContent.trim()).then(function () {
          button.textContent = "Copied";
          var status = document.getElementById("copy-status");
          if (status) {
            status.textContent = "The key was copied to the clipboard.";
          }
          if (unsaved) {
            unsaved.removeAttribute("data-secret-unsaved");
            unsaved = null;
          }
        });
      });
    });

    window.addEventListener("beforeunload", function (event) {
      if (unsaved) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
    document.querySelectorAll("[data-leave-ok]").forEach(function (link) {
      link.addEventListener("click", function () {
        unsaved = null;
      });
    });

    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  });
})();
