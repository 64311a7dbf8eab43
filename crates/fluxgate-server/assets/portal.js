// Fluxgate portal: progressive enhancement. Every page but a passkey's works without this file;
// it adds a copy button for secrets, a warning before leaving a secret that was not copied,
// confirmation prompts for destructive buttons, and the browser's part of a passkey ceremony
// (WebAuthn needs script: the server's options go to navigator.credentials, its answer back
// into the form).
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

    document.querySelectorAll("form[data-passkey]").forEach(passkeyForm);

    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  });

  // base64url (no padding) <-> bytes, as the server's WebAuthn JSON carries binary fields
  function fromBase64url(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeCredentials(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: fromBase64url(c.id) });
    });
  }

  // The server's options (binary fields in base64url) as navigator.credentials takes them.
  function publicKeyOptions(options, kind) {
    var key = Object.assign({}, options.publicKey);
    key.challenge = fromBase64url(key.challenge);
    if (kind === "create") {
      key.user = Object.assign({}, key.user, { id: fromBase64url(key.user.id) });
      key.excludeCredentials = decodeCredentials(key.excludeCredentials);
    } else {
      key.allowCredentials = decodeCredentials(key.allowCredentials);
    }
    return { publicKey: key };
  }

  // The browser's answer as the server reads it.
  function credentialJson(credential, kind) {
    var r = credential.response;
    var response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (kind === "create") {
      response.attestationObject = toBase64url(r.attestationObject);
    } else {
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null;
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      extensions: {}
    });
  }

  // A form whose submit runs a passkey ceremony first: the options are in data-options, the
  // answer goes into its `credential` field, then the form is sent as usual.
  function passkeyForm(form) {
    var kind = form.getAttribute("data-passkey");
    var status = document.getElementById("passkey-status");
    var say = function (message) {
      if (status) {
        status.hidden = false;
        status.textContent = message;
      }
    };
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say("This browser cannot use passkeys.");
      return;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var options = publicKeyOptions(JSON.parse(form.getAttribute("data-options")), kind);
      var asked = kind === "create" ? navigator.credentials.create(options) : navigator.credentials.get(options);
      asked.then(function (credential) {
        form.querySelector("input[name=credential]").value = credentialJson(credential, kind);
        form.submit();
      }, function (error) {
        say(error && error.name === "NotAllowedError"
          ? "The passkey was not used (cancelled, or it timed out). Try again."
          : "The passkey did not work: " + (error && error.message ? error.message : error));
      });
    });
  }
})();
