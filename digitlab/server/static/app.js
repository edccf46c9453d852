// digitlab drawing page: a pointer-events canvas, live predictions from /api/predict, uploads, and
// (when the server stores feedback) "Right" / "Wrong, it is: ..." answers sent to /api/feedback.
// Plain JavaScript with no dependencies; the server serves every file this page uses.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const brush = $("brush");
  const numberMode = $("number-mode");
  const fileInput = $("file");
  const dropzone = $("dropzone");
  const prediction = $("prediction");

  const SIZE = { digit: [280, 280], number: [640, 280] };
  const DEBOUNCE_MS = 150;   // predict once the pen has paused this long...
  const THROTTLE_MS = 300;   // ...and, while it keeps moving, at most this often

  let strokes = [];          // [{size, points: [[x, y], ...]}], so undo can redraw the rest
  let current = null;        // the stroke being drawn
  let version = 0;           // bumped on every change; a result shows the version it answers
  let epoch = 0;             // version at the last clear or upload: answers older than it are dropped
  let lastSent = 0;
  let timer = null;
  let inFlight = false;
  let queued = false;

  // ---- chart ----------------------------------------------------------------------------------
  const bars = [];
  for (let d = 0; d < 10; d++) {
    const li = document.createElement("li");
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    track.appendChild(bar);
    const pct = document.createElement("span");
    pct.className = "pct";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = String(d);
    li.append(pct, track, label);
    $("chart").appendChild(li);
    bars.push({ li, bar, pct });
  }

  function showChart(probs, top) {
    bars.forEach((b, d) => {
      const p = probs ? probs[d] || 0 : 0;
      b.bar.style.setProperty("--p", p.toFixed(4));
      b.pct.textContent = probs ? Math.round(p * 100) + "%" : "";
      b.li.classList.toggle("top", probs !== null && d === top);
      b.li.setAttribute("aria-label", "digit " + d + ": " + (p * 100).toFixed(1) + "%");
    });
  }

  // ---- drawing --------------------------------------------------------------------------------
  function resetCanvas() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#111";
    ctx.fillStyle = "#111";
  }

  function drawStroke(s, from) {
    const pts = s.points;
    ctx.lineWidth = s.size;
    if (pts.length === 1) {
      ctx.beginPath();
      ctx.arc(pts[0][0], pts[0][1], s.size / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    const start = Math.max(0, (from || 0) - 1);
    ctx.moveTo(pts[start][0], pts[start][1]);
    for (let i = start + 1; i < pts.length; i++) ctx.lineTo(pts[i][0], pts[i][1]);
    ctx.stroke();
  }

  function redraw() {
    resetCanvas();
    strokes.forEach((s) => drawStroke(s, 0));
  }

  function toCanvas(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  }

  function changed(immediate) {
    version++;
    pad.dataset.version = String(version);
    clearTimeout(timer);
    if (!strokes.length) { showEmpty(); return; }
    if (!immediate && performance.now() - lastSent > THROTTLE_MS) requestPrediction();
    timer = setTimeout(requestPrediction, immediate ? 0 : DEBOUNCE_MS);
  }

  pad.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    hidePhoto();
    current = { size: Number(brush.value), points: [toCanvas(e)] };
    strokes.push(current);
    drawStroke(current, 0);
  });

  pad.addEventListener("pointermove", (e) => {
    if (!current) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    const from = current.points.length;
    (events.length ? events : [e]).forEach((ev) => current.points.push(toCanvas(ev)));
    drawStroke(current, from);
    changed(false);
  });

  function endStroke() {
    if (!current) return;
    current = null;
    changed(true);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function undo() {
    if (!strokes.length) return;
    strokes.pop();
    redraw();
    changed(true);
  }

  function clearAll() {
    strokes = [];
    current = null;
    redraw();
    hidePhoto();
    changed(true);
    epoch = version;
  }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  brush.addEventListener("input", () => { $("brush-value").textContent = brush.value; });
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement && e.target.type !== "checkbox";
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z" && !typing) { e.preventDefault(); undo(); }
    else if (e.key === "Escape") clearAll();
  });

  numberMode.addEventListener("change", () => {
    const [w, h] = numberMode.checked ? SIZE.number : SIZE.digit;
    pad.width = w;
    pad.height = h;
    pad.classList.toggle("wide", numberMode.checked);
    clearAll();
    setStatus(numberMode.checked ? "Number mode: write several digits side by side."
                                 : "Draw a digit to start.");
  });

  // ---- prediction -----------------------------------------------------------------------------
  // include=input: the answer carries the 28x28 image the model saw (shown beside the chart)
  function endpoint() {
    return "/api/predict?include=input" + (numberMode.checked ? "&number=true" : "");
  }

  async function requestPrediction() {
    if (inFlight) { queued = true; return; }
    if (!strokes.length) return;
    inFlight = true;
    lastSent = performance.now();
    const v = version;
    const image = pad.toDataURL("image/png");
    try {
      const res = await fetch(endpoint(), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image }),
      });
      const body = await res.json();
      // One request at a time, so answers arrive in order and the one shown is the newest; an
      // answer about a drawing that has since been cleared or replaced by an upload is dropped.
      if (v > epoch && strokes.length) show(body, res.ok, v, { dataURL: image });
    } catch (err) {
      if (v > epoch && strokes.length) showError("Cannot reach the server: " + err.message, v);
    } finally {
      inFlight = false;
      if (queued) { queued = false; requestPrediction(); }
    }
  }

  async function upload(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError("That is not an image (" + file.type + ").", version);
      return;
    }
    strokes = [];
    redraw();
    version++;
    epoch = version;
    pad.dataset.version = String(version);
    const v = version;
    showPhoto(file);
    setStatus("Reading " + file.name + "…");
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const res = await fetch(endpoint(), { method: "POST", body: form });
      const body = await res.json();
      if (v === version) show(body, res.ok, v, { file });
    } catch (err) {
      if (v === version) showError("Upload failed: " + err.message, v);
    }
  }

  function setStatus(text) { $("status").textContent = text; }

  function markShown(v, kind) {
    prediction.dataset.version = String(v);
    prediction.dataset.state = kind;
  }

  function show(body, ok, v, source) {
    if (!ok) { showError(body && body.detail ? body.detail : "The server refused the image.", v); return; }
    const number = body.number !== null && body.number !== undefined;
    prediction.textContent = number ? (body.number || "?") : (body.digit === null ? "?" : body.label);
    $("confidence").textContent = body.digit === null && !number ? "" : (body.confidence * 100).toFixed(1) + "%";
    if (body.rejected) setStatus("Not sure" + (body.reason ? ": " + body.reason : "."));
    else if (number) setStatus("Read " + (body.digits ? body.digits.length : 0) + " digit(s).");
    else setStatus("Top guesses: " + body.top_k.map((t) => t.label + " (" + (t.probability * 100).toFixed(0) + "%)").join(", "));
    // no ranking (top_k empty) means no digit was found: the uniform probabilities say nothing
    showChart(body.top_k && body.top_k.length ? body.probabilities : null, body.digit);
    showSeen(body.image);
    showDigits(number ? body.digits : null);
    // An answer can be judged when the model read a single digit (the image held one).
    offerFeedback(!number && body.top_k && body.top_k.length
      ? { source, predicted: body.digit, confidence: body.confidence } : null);
    markShown(v, body.rejected ? "rejected" : "ok");
  }

  function showError(text, v) {
    prediction.textContent = "!";
    $("confidence").textContent = "";
    setStatus(text);
    showChart(null, null);
    offerFeedback(null);
    markShown(v, "error");
  }

  function showEmpty() {
    prediction.textContent = "–";
    $("confidence").textContent = "";
    setStatus(numberMode.checked ? "Number mode: write several digits side by side." : "Draw a digit to start.");
    showChart(null, null);
    showSeen(null);
    showDigits(null);
    offerFeedback(null);
    markShown(version, "empty");
  }

  $("seen").addEventListener("load", (e) => {
    const img = e.target;
    $("seen-caption").textContent = "What the model saw (" + img.naturalWidth + "\u00d7" + img.naturalHeight + ")";
  });

  function showSeen(src) {
    const img = $("seen");
    img.hidden = !src;
    $("seen-empty").hidden = !!src;
    if (src) img.src = src; else img.removeAttribute("src");
  }

  // Number mode: one chip per digit; choosing a chip shows that digit's probabilities.
  function showDigits(digits) {
    const list = $("digits");
    list.replaceChildren();
    list.hidden = !digits || !digits.length;
    if (!digits || !digits.length) { $("chart-caption").textContent = "Probability of each digit"; return; }
    const chips = digits.map((d, i) => {
      const li = document.createElement("li");
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      const img = document.createElement("img");
      img.src = d.image || "";
      img.alt = "";
      img.width = 42;
      img.height = 42;
      const text = document.createElement("span");
      text.textContent = (d.digit === null ? "?" : d.label) + " " + Math.round(d.confidence * 100) + "%";
      chip.append(img, text);
      chip.setAttribute("aria-label", "digit " + (i + 1) + ": " + text.textContent);
      chip.addEventListener("click", () => select(i));
      li.appendChild(chip);
      list.appendChild(li);
      return chip;
    });
    function select(i) {
      chips.forEach((c, j) => c.setAttribute("aria-pressed", String(i === j)));
      showChart(digits[i].top_k.length ? digits[i].probabilities : null, digits[i].digit);
      $("chart-caption").textContent = "Probabilities for digit " + (i + 1) + " of " + digits.length;
    }
    // Start with the digit the model is least sure of: the one worth a look.
    let least = 0;
    digits.forEach((d, i) => { if (d.confidence < digits[least].confidence) least = i; });
    select(least);
  }

  let photoURL = null;
  function showPhoto(file) {
    if (photoURL) URL.revokeObjectURL(photoURL);
    photoURL = URL.createObjectURL(file);
    $("photo").src = photoURL;
    $("photo-caption").textContent = "Uploaded: " + file.name;
    $("photo-figure").hidden = false;
  }
  function hidePhoto() { $("photo-figure").hidden = true; }

  // ---- feedback: was the answer right? -------------------------------------------------------
  // Shown only when /api/health says the server stores feedback. One answer per prediction: the
  // image sent is the one that was predicted (the canvas PNG as sent, or the uploaded file).
  const feedbackPanel = $("feedback");
  const digitButtons = Array.from(document.querySelectorAll(".fb-digit"));
  const feedbackButtons = [$("fb-right"), ...digitButtons];
  let feedbackOn = false;
  let answer = null;         // {source, predicted, confidence} of the answer on show, or null

  function offerFeedback(a) {
    answer = a;
    feedbackPanel.hidden = !(feedbackOn && a);
    if (!a) return;
    $("fb-right").hidden = a.predicted === null;  // no digit given: only "it is ..." makes sense
    digitButtons.forEach((b) => { b.hidden = Number(b.dataset.digit) === a.predicted; });
    feedbackButtons.forEach((b) => { b.disabled = false; b.removeAttribute("aria-pressed"); });
    $("feedback-status").textContent = "";
    feedbackPanel.dataset.state = "open";
  }

  function imageBlob(source) {
    if (source.file) return source.file;
    const bin = atob(source.dataURL.slice(source.dataURL.indexOf(",") + 1));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Blob([bytes], { type: "image/png" });
  }

  async function refreshCount() {
    try {
      const res = await fetch("/api/feedback/stats");
      if (!res.ok) return;
      const s = await res.json();
      const corrections = s.wrong + s.rejected;
      $("feedback-count").textContent = s.total + (s.total === 1 ? " answer" : " answers") +
        " stored so far, " + corrections + (corrections === 1 ? " correction." : " corrections.");
    } catch (err) { /* the count is a courtesy; the buttons still work */ }
  }

  async function sendFeedback(label, button) {
    const a = answer;
    if (!a) return;
    feedbackButtons.forEach((b) => { b.disabled = true; });
    button.setAttribute("aria-pressed", "true");
    const form = new FormData();
    form.append("file", imageBlob(a.source), a.source.file ? a.source.file.name : "drawing.png");
    form.append("label", String(label));
    if (a.predicted !== null) {
      form.append("predicted", String(a.predicted));
      form.append("confidence", String(a.confidence));
    }
    let text, stored = false;
    try {
      const res = await fetch("/api/feedback", { method: "POST", body: form });
      const body = await res.json();
      stored = res.ok;
      if (res.ok) text = "Thank you: stored as #" + body.id + (label === a.predicted ? "." : ", as " + (label === 8 ? "an " : "a ") + label + ".");
      else if (res.status === 429) text = "Too many answers at once: try again in " + (res.headers.get("Retry-After") || "a few") + " s.";
      else text = "Not stored: " + (body.detail || "the server refused it (" + res.status + ").");
    } catch (err) {
      text = "Not stored: cannot reach the server (" + err.message + ").";
    }
    if (answer !== a) return;  // a new answer is on show: this one's message is stale
    $("feedback-status").textContent = text;
    feedbackPanel.dataset.state = stored ? "sent" : "failed";
    if (stored) refreshCount();
    else {
      feedbackButtons.forEach((b) => { b.disabled = false; });
      button.removeAttribute("aria-pressed");
    }
  }

  $("fb-right").addEventListener("click", (e) => { if (answer) sendFeedback(answer.predicted, e.currentTarget); });
  digitButtons.forEach((b) => b.addEventListener("click", () => sendFeedback(Number(b.dataset.digit), b)));

  fetch("/api/health").then((r) => r.json()).then((h) => {
    feedbackOn = !!h.feedback;
    feedbackPanel.hidden = !(feedbackOn && answer);
    if (feedbackOn) refreshCount();
  }).catch(() => { /* no feedback buttons then */ });

  // ---- upload: picker and drag-and-drop -------------------------------------------------------
  $("upload").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => { upload(fileInput.files[0]); fileInput.value = ""; });
  ["dragenter", "dragover"].forEach((t) => dropzone.addEventListener(t, (e) => {
    e.preventDefault();
    dropzone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((t) => dropzone.addEventListener(t, () => dropzone.classList.remove("dragging")));
  dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) upload(file);
  });

  resetCanvas();
  showChart(null, null);
  showSeen(null);
  pad.dataset.version = "0";
  markShown(0, "empty");
})();
