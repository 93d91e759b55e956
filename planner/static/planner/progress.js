// Polls the request's progress while it runs; reloads the page when a candidate finishes or the run ends.
(function () {
  const box = document.getElementById("progress");
  if (!box || box.hidden) return;
  const bar = box.querySelector("progress");
  const pct = document.getElementById("progress-pct");
  const message = document.getElementById("progress-message");
  // Translated by the page (data-text-* on #progress).
  const waiting = box.dataset.textWaiting || "waiting for a worker";
  const unavailable = box.dataset.textUnavailable || "progress unavailable, retrying…";
  let seen = null;
  async function poll() {
    try {
      const response = await fetch(box.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.statusText);
      const data = await response.json();
      bar.value = data.progress;
      pct.textContent = Math.round(data.progress * 100) + "%";
      message.textContent = data.message || waiting;
      const state = JSON.stringify(data.candidates) + data.status;
      if (seen !== null && state !== seen) return window.location.reload();
      seen = state;
      if (data.status === "succeeded" || data.status === "failed") return window.location.reload();
    } catch (err) {
      message.textContent = unavailable + " (" + err.message + ")";
    }
    setTimeout(poll, 2000);
  }
  poll();
})();
