// Live replies: each pending reply follows its job's Server-Sent Events, shows
// status, tool calls and the reply's growing text (`content.delta`, which
// carries the whole text so far) as they happen, and swaps in the finished,
// rendered reply when the job ends. A run that pauses for a person
// (`job.action_required`) shows the cards of its pending actions in the same
// bubble; after the decision the stream goes on as for any reply.
(function () {
  "use strict";
  function follow(el) {
    if (el.dataset.following) return;
    el.dataset.following = "1";
    var status = el.querySelector(".status");
    var tools = el.querySelector(".tools");
    var content = el.querySelector(".content");
    var actions = el.querySelector(".actions");
    var paused = false;
    var source = new EventSource(el.dataset.events);
    var done = false;
    function finish() {
      if (done) return;
      done = true;
      source.close();
      htmx.ajax("GET", el.dataset.reply, { target: el, swap: "outerHTML" });
    }
    function resumed() {
      // decided (here or elsewhere): cards still undecided on this page are stale, decided notes stay
      if (!paused) return;
      paused = false;
      if (actions) actions.querySelectorAll("form.action-card").forEach(function (card) { card.remove(); });
    }
    source.addEventListener("job.queued", function () { resumed(); status.textContent = "Queued — waiting for a worker…"; });
    source.addEventListener("job.running", function () { resumed(); status.textContent = "Thinking…"; });
    source.addEventListener("job.action_required", function () {
      paused = true;
      status.textContent = "Waiting for your decision…";
      if (actions) htmx.ajax("GET", el.dataset.actions, { target: actions, swap: "innerHTML" });
    });
    source.addEventListener("tool_call.started", function (e) {
      var data = JSON.parse(e.data);
      var card = document.createElement("details");
      card.className = "tool";
      card.innerHTML = "<summary>Tool <strong></strong> · running…</summary><code></code>";
      card.querySelector("strong").textContent = data.name;
      card.querySelector("code").textContent = JSON.stringify(data.arguments);
      tools.appendChild(card);
    });
    source.addEventListener("content.delta", function (e) {
      var text = JSON.parse(e.data).text;
      // the longest text wins: a stale delta never shrinks what is shown
      if (done || !content || typeof text !== "string" || text.length < content.textContent.length) return;
      content.textContent = text;
      status.textContent = "Writing…";
    });
    ["job.succeeded", "job.failed", "job.cancelled", "job.expired"].forEach(function (type) {
      source.addEventListener(type, finish);
    });
    // 204 (already finished) or a dropped connection: the reply fragment has the final state
    source.onerror = function () { if (source.readyState === EventSource.CLOSED) finish(); };
  }
  function scan(root) {
    (root || document).querySelectorAll(".msg.pending[data-events]").forEach(follow);
  }
  // A new schedule's timezone starts as the browser's own (the server's default is UTC);
  // the input event asks the preview again, for that zone.
  function guessZone() {
    var field = document.querySelector("input[data-browser-zone]");
    var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!field || !zone || field.value !== "UTC" || zone === "UTC") return;
    field.value = zone;
    field.dispatchEvent(new Event("input", { bubbles: true }));
  }
  document.addEventListener("DOMContentLoaded", function () {
    scan(document);
    guessZone();
    var box = document.getElementById("message");
    if (box) {
      box.addEventListener("keydown", function (e) {
        if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); box.form.requestSubmit(); }
      });
    }
  });
  document.addEventListener("htmx:afterSettle", function (e) { scan(e.target.parentNode || document); });
  // A refused decision (400 bad input, 409 already decided or the job ended) is said on its
  // card; htmx drops error responses by default.
  // A refused schedule button (409: its agent is gone) answers with its row, saying why: swap it.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var row = e.detail.elt && e.detail.elt.closest && e.detail.elt.closest("tr.schedule");
    var code = e.detail.xhr.status;
    if (!row || code < 400 || code >= 500 || !/^<tr class="schedule"/.test(e.detail.serverResponse || "")) return;
    e.detail.shouldSwap = true;
    e.detail.isError = false;
  });
  document.addEventListener("htmx:beforeSwap", function (e) {
    var card = e.detail.elt && e.detail.elt.closest && e.detail.elt.closest("form.action-card");
    var code = e.detail.xhr.status;
    if (!card || code < 400 || code >= 500) return;
    var place = card.querySelector(".action-error");
    if (!/^<p class="error"/.test(e.detail.serverResponse || "")) {  // a whole page (404, 403): not for the card
      place.textContent = "This action cannot be decided here (error " + code + "); reload the page.";
      return;
    }
    e.detail.shouldSwap = true;
    e.detail.isError = false;
    e.detail.target = place;
    e.detail.swapOverride = "innerHTML";
  });
})();
