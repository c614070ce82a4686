// fakescope web page: upload one file, show the verdict, a score bar, a heatmap (images)
// or a per-frame timeline (videos). Plain JavaScript, no build step, no external resources.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const VIDEO_TYPES = /^video\//;
  const VIDEO_NAMES = /\.(mp4|m4v|mov|webm|mkv|avi)$/i;
  const WORDS = {
    fake: "Likely AI-generated.",
    real: "Likely a real photo or video.",
    uncertain: "Too close to call: the score is inside the uncertain band.",
  };

  const VERDICTS = ["fake", "real", "uncertain", "error"];
  // The verdict of a file whose metadata declares it AI-generated (whatever its pixel score).
  const DECLARED = "fake (declared)";
  const METHODS = {
    gradcam: "Grad-CAM (gradient of the score with respect to the network's last feature maps)",
    occlusion: "occlusion (how much P(fake) drops when each patch is greyed out)",
  };
  const MAX_EVIDENCE = 20;
  const MAX_VALUE = 300;
  // The API key (when the server wants one) lives in this tab's session storage only.
  const KEY_STORE = "fakescope.apiKey";
  const KEY_CHARS = /^[\x21-\x7e]{1,512}$/; // what an HTTP header can carry: printable ASCII

  // `selection` counts chosen files; a response is used only while its job is `state.job` and
  // its selection is still the current one, so a late answer can never land in a newer result.
  const state = {
    file: null, objectUrl: null, row: null, heatmap: null, limits: null, selection: 0, job: null,
    apiKey: "", pendingFile: null,
  };

  // ------------------------------------------------------------------------------ helpers
  function show(el, visible) { el.hidden = !visible; }
  function pct(x) { return (100 * x).toFixed(1) + "%"; }
  function text(x) { return x === null || x === undefined ? "" : String(x); }
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    show(box, Boolean(message));
  }

  function setStatus(message) { $("status").textContent = message; }

  // ---------------------------------------------------------------------------- API key
  function storedKey() {
    try {
      const key = sessionStorage.getItem(KEY_STORE) || "";
      return KEY_CHARS.test(key) ? key : "";
    } catch (e) {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch (e) {
      // storage refused (private mode...): the key still works until the page is reloaded
    }
  }

  // fetch() with the API key, when there is one
  function api(url, init) {
    const opts = Object.assign({}, init || {});
    if (state.apiKey) opts.headers = { "X-API-Key": state.apiKey };
    return fetch(url, opts);
  }

  function askForKey(message) {
    const rejected = Boolean(state.apiKey);
    state.apiKey = "";
    storeKey("");
    show($("key-set"), false);
    show($("key-form"), true);
    $("key-status").textContent = message || (rejected ? "That key was not accepted." : "");
    $("api-key").focus();
  }

  function keyAccepted() {
    show($("key-form"), false);
    $("key-status").textContent = "";
    show($("key-set"), Boolean(state.apiKey));
  }

  async function submitKey(event) {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!KEY_CHARS.test(key)) {
      $("key-status").textContent = key
        ? "A key is made of printable ASCII characters, without spaces."
        : "Enter the key first.";
      return;
    }
    state.apiKey = key;
    const status = await loadModelInfo();
    if (status === 401) {
      askForKey("That key was not accepted.");
      return;
    }
    storeKey(key);
    $("api-key").value = "";
    keyAccepted();
    const pending = state.pendingFile;
    state.pendingFile = null;
    if (pending) analyse(pending);
  }

  function forgetKey() {
    state.apiKey = "";
    storeKey("");
    show($("key-set"), false);
    loadModelInfo().then((status) => { if (status === 401) askForKey(""); });
  }

  async function readError(resp) {
    let detail = "";
    try {
      const body = await resp.json();
      detail = body && (body.detail || body.error) ? String(body.detail || body.error) : "";
    } catch (e) {
      detail = "";
    }
    if (resp.status === 401) {
      return "This server needs an API key. Enter it above; the file is scored once it is " +
        "accepted.";
    }
    if (resp.status === 503) {
      return "The server is busy with other files. Please try again in a moment." +
        (detail ? " (" + detail + ")" : "");
    }
    if (resp.status === 504) {
      return "The server took too long on this file. " + detail;
    }
    return detail || ("The server answered with an error (HTTP " + resp.status + ").");
  }

  function isVideo(file) {
    return VIDEO_TYPES.test(file.type || "") || VIDEO_NAMES.test(file.name || "");
  }

  // ------------------------------------------------------------------------- model info
  // Returns the HTTP status (0 when the server could not be reached).
  async function loadModelInfo() {
    let resp = null;
    try {
      resp = await api("/v1/model");
      if (resp.status === 401) {
        $("model-info").textContent = "Model information needs the server's API key.";
        return 401;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const info = await resp.json();
      state.limits = info.limits || null;
      const modelInfo = $("model-info");
      modelInfo.textContent = "Detector: " + text(info.detector || info.name) + " · threshold " +
        pct(info.threshold) + " ± " + pct(info.uncertain_band) + " uncertain band";
      modelInfo.title = "Model: " + text(info.name); // the technical description, on hover
      $("model-about").textContent = info.description ? "This detector is " +
        text(info.description) + "." : "";
      show($("model-about"), Boolean(info.description));
      if (state.limits) {
        $("limits").textContent = "JPEG, PNG, GIF, WebP, BMP, TIFF images; MP4, MOV, WebM, " +
          "MKV, AVI videos. Up to " + state.limits.max_upload_mb + " MB; videos are judged on " +
          "up to " + ((info.video && info.video.frames) || 16) + " frames.";
      }
    } catch (e) {
      $("model-info").textContent = "Model information is unavailable.";
    }
    return resp ? resp.status : 0;
  }

  // ------------------------------------------------------------------------ busy / jobs
  // One request at a time: a job owns an AbortController and the progress indicator.
  function startJob(kind, label, note) {
    cancelJob();
    const job = {
      kind: kind, selection: state.selection, controller: new AbortController(),
      start: Date.now(), timer: 0,
    };
    state.job = job;
    $("progress-text").textContent = label;
    $("progress-note").textContent = note || "";
    tick(job);
    job.timer = setInterval(() => tick(job), 1000);
    setBusy(true);
    return job;
  }

  function tick(job) {
    $("progress-elapsed").textContent = Math.floor((Date.now() - job.start) / 1000) + " s";
  }

  function isCurrent(job) { return state.job === job && job.selection === state.selection; }

  function endJob(job) {
    if (state.job !== job) return;
    clearInterval(job.timer);
    state.job = null;
    setBusy(false);
  }

  function cancelJob() {
    const job = state.job;
    if (!job) return null;
    clearInterval(job.timer);
    state.job = null;
    job.controller.abort();
    setBusy(false);
    return job;
  }

  function setBusy(busy) {
    show($("progress"), busy);
    $("result-grid").setAttribute("aria-busy", busy ? "true" : "false");
    $("drop-zone").classList.toggle("busy", busy);
    $("heatmap-toggle").disabled = busy;
    $("drop-help").textContent = busy
      ? "Working on the current file. Dropping or choosing another file cancels it."
      : "Drop an image or a video here, or choose one.";
  }

  function cancelByUser() {
    const job = cancelJob();
    if (!job) return;
    if (job.kind === "heatmap") {
      $("heatmap-toggle").checked = false;
      $("heatmap-status").textContent = "Heatmap cancelled.";
    } else {
      setStatus("Cancelled. Choose the file again to score it.");
    }
  }

  // ----------------------------------------------------------------------------- upload
  function upload(file, explain, signal) {
    const form = new FormData();
    form.append("file", file, file.name);
    const url = "/v1/detect" + (explain ? "?explain=true" : "");
    return api(url, { method: "POST", body: form, signal: signal });
  }

  function resetResult(file) {
    state.row = null;
    state.heatmap = null;
    $("heatmap-toggle").checked = false;
    $("heatmap-status").textContent = "";
    hideHeatmap();
    $("heatmap-image").removeAttribute("src");
    setStatus("");
    show($("verdict-panel"), false);
    show($("timeline-panel"), false);
    show($("heatmap-controls"), false);
    show($("provenance"), false);
    $("provenance-evidence").replaceChildren();
    $("file-name").textContent = file ? "· " + file.name : "";
  }

  function showPreview(file) {
    if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
    state.objectUrl = URL.createObjectURL(file);
    const video = isVideo(file);
    const img = $("preview-image");
    const vid = $("preview-video");
    show(img, !video);
    show(vid, video);
    if (video) {
      img.removeAttribute("src");
      vid.src = state.objectUrl;
    } else {
      vid.removeAttribute("src");
      img.src = state.objectUrl;
    }
    $("preview-caption").textContent = "";
  }

  function failed(message) {
    setStatus("");
    show($("result"), false);
    showError(message);
  }

  async function analyse(file) {
    if (!file) return;
    cancelJob(); // whatever was running belongs to the previous file
    state.selection += 1;
    state.file = file;
    showError("");
    resetResult(file);
    show($("result"), true);
    showPreview(file);
    const maxMb = state.limits && state.limits.max_upload_mb;
    if (maxMb && file.size > maxMb * 1024 * 1024) {
      failed(file.name + " is larger than the upload limit of " + maxMb + " MB.");
      return;
    }
    const video = isVideo(file);
    const job = startJob("detect", video ? "Scoring the video…" : "Scoring the image…",
      video ? "Videos take longer: every sampled frame is scored." : "");
    try {
      const resp = await upload(file, false, job.controller.signal);
      if (!isCurrent(job)) return;
      if (!resp.ok) {
        const message = await readError(resp);
        if (!isCurrent(job)) return;
        failed(message);
        if (resp.status === 401) {
          state.pendingFile = file;
          askForKey("");
        }
        return;
      }
      const row = await resp.json();
      if (!isCurrent(job)) return;
      state.row = row;
      setStatus("Done in " + Math.round(row.time_ms) + " ms.");
      renderRow(row);
    } catch (e) {
      if (isCurrent(job)) failed("Could not reach the server: " + e.message);
    } finally {
      endJob(job);
    }
  }

  // ----------------------------------------------------------------------------- result
  function verdictClass(verdict) {
    const first = text(verdict).trim().split(/\s+/)[0].toLowerCase();
    return VERDICTS.indexOf(first) >= 0 ? first : "other";
  }

  // The sentence under the verdict badge: it must say why this verdict, not another one.
  function verdictWords(row, cls) {
    const what = row.kind === "video" ? "video" : "image";
    const declared = row.verdict === DECLARED ||
      (cls === "fake" && Boolean(row.provenance && row.provenance.declared_ai));
    if (declared) {
      return "Fake because this " + what + "'s own metadata declares it AI-generated (see " +
        "Provenance below). The probability is what the pixels alone say.";
    }
    if (cls === "uncertain" && row.reason) {
      return "Uncertain: this " + what + " is " + text(row.reason) +
        ", so the score is not to be trusted.";
    }
    const words = WORDS[cls] || "";
    return row.reason ? words + " (" + text(row.reason) + ")" : words;
  }

  function renderRow(row) {
    const verdict = $("verdict");
    const cls = verdictClass(row.verdict);
    verdict.textContent = text(row.verdict);
    verdict.className = "verdict " + cls;
    $("verdict-words").textContent = verdictWords(row, cls);
    $("probability").textContent = pct(row.score);
    renderBar(row);
    const details = [];
    if (row.width && row.height) details.push(row.width + "×" + row.height + " px");
    if (row.kind === "video" && row.n_frames) {
      details.push(row.n_frames + " frames, " + text(row.aggregate) + " of their scores");
    }
    // the detector by its name; the technical model string only on hover
    details.push(row.detector ? "detector " + text(row.detector) : "model " + text(row.model));
    $("details").textContent = details.join(" · ");
    $("details").title = row.detector ? "Model: " + text(row.model) : "";
    renderProvenance(row.provenance);
    show($("verdict-panel"), true);
    show($("heatmap-controls"), row.kind === "image");
    if (row.kind === "video" && row.frames && row.frames.length) {
      show($("timeline-panel"), true);
      drawTimeline(row);
    }
  }

  // Everything here comes from file metadata, i.e. from whoever made the file: text only.
  function renderProvenance(prov) {
    const list = $("provenance-evidence");
    list.replaceChildren();
    if (!prov || typeof prov !== "object") {
      show($("provenance"), false);
      return;
    }
    $("provenance-summary").textContent = text(prov.summary) ||
      (prov.declared_ai ? "declared AI-generated" : "no provenance metadata found");
    const evidence = Array.isArray(prov.evidence) ? prov.evidence : [];
    for (const item of evidence.slice(0, MAX_EVIDENCE)) {
      if (!item || typeof item !== "object") continue;
      const li = document.createElement("li");
      if (item.ai) li.className = "ai";
      const source = document.createElement("strong");
      source.textContent = text(item.source).toUpperCase() || "?";
      li.append(source, " ");
      const means = text(item.means) || text(item.field);
      if (means) li.append(means);
      const value = text(item.value);
      if (value) {
        const code = document.createElement("code");
        code.textContent = clip(value, MAX_VALUE);
        if (value.length > MAX_VALUE) code.title = value;
        li.append(" (" + (item.field ? text(item.field) + ": " : ""), code, ")");
      }
      if (item.signature) li.append(" · signature: " + text(item.signature));
      list.append(li);
    }
    if (evidence.length > MAX_EVIDENCE) {
      const li = document.createElement("li");
      li.textContent = "… and " + (evidence.length - MAX_EVIDENCE) + " more";
      list.append(li);
    }
    show(list, list.childElementCount > 0);
    $("provenance-error").textContent = prov.error ? "Could not read all metadata: " +
      text(prov.error) : "";
    show($("provenance-error"), Boolean(prov.error));
    show($("provenance"), true);
  }

  function renderBar(row) {
    const t = row.threshold;
    const b = row.uncertain_band;
    const lo = Math.max(0, t - b);
    const hi = Math.min(1, t + b);
    $("score-band").style.left = pct(lo);
    $("score-band").style.width = pct(hi - lo);
    $("score-threshold").style.left = pct(t);
    $("score-marker").style.left = pct(Math.min(1, Math.max(0, row.score)));
    const label = "P(fake) " + pct(row.score) + " on a scale from real (0%) to fake (100%); " +
      "threshold " + pct(t) + ", uncertain between " + pct(lo) + " and " + pct(hi) + ".";
    $("score-bar").setAttribute("aria-label", label);
    $("score-legend").textContent = "Line: threshold " + pct(t) + ". Hatched: uncertain band " +
      pct(lo) + "–" + pct(hi) + ". Dot: this file.";
  }

  // ---------------------------------------------------------------------------- heatmap
  function hideHeatmap() {
    show($("heatmap-image"), false);
    show($("heatmap-legend"), false);
    show($("preview-image"), Boolean(state.file) && !isVideo(state.file));
    $("preview-caption").textContent = "";
  }

  function drawHeatmap() {
    const heat = state.heatmap;
    if (!heat || heat.selection !== state.selection) return;
    $("heatmap-image").src = "data:image/png;base64," + heat.png;
    show($("heatmap-image"), true);
    show($("preview-image"), false);
    $("preview-caption").textContent = "Heatmap over the image; the model saw the part in " +
      "colour (its centre square), the greyed parts it did not see. Colours are relative to " +
      "this image.";
    $("heatmap-method").textContent = "Method: " + (METHODS[heat.method] || heat.method) + ".";
    show($("heatmap-legend"), true);
  }

  async function toggleHeatmap() {
    const toggle = $("heatmap-toggle");
    if (!toggle.checked) {
      hideHeatmap();
      return;
    }
    if (!state.heatmap) {
      const selection = state.selection;
      await fetchHeatmap();
      if (selection !== state.selection) return; // another file was chosen meanwhile
      if (!state.heatmap) {
        toggle.checked = false;
        return;
      }
      if (!toggle.checked) return;
    }
    drawHeatmap();
  }

  async function fetchHeatmap() {
    const file = state.file;
    if (!file) return;
    $("heatmap-status").textContent = "";
    const job = startJob("heatmap", "Computing the heatmap…",
      "Heatmaps take up to a minute on a CPU.");
    try {
      const resp = await upload(file, true, job.controller.signal);
      if (!isCurrent(job)) return;
      if (!resp.ok) {
        const message = await readError(resp);
        if (!isCurrent(job)) return;
        if (resp.status === 401) {
          $("heatmap-toggle").checked = false;
          askForKey("");
          showError("This server needs an API key. Enter it above, then ask for the heatmap " +
            "again.");
        } else {
          showError(message);
        }
        return;
      }
      const row = await resp.json();
      if (!isCurrent(job)) return;
      if (!row.heatmap_png) {
        $("heatmap-status").textContent = text(row.heatmap_error) || "No heatmap for this model.";
        return;
      }
      state.heatmap = {
        png: String(row.heatmap_png), method: text(row.heatmap_method) || "unknown",
        selection: job.selection,
      };
    } catch (e) {
      if (isCurrent(job)) showError("Could not reach the server: " + e.message);
    } finally {
      endJob(job);
    }
  }

  // ------------------------------------------------------------------------------- timeline
  function drawTimeline(row) {
    const canvas = $("timeline");
    const ratio = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 720;
    const cssH = Math.round(cssW / 3);
    canvas.width = Math.round(cssW * ratio);
    canvas.height = Math.round(cssH * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);

    const pad = { left: 46, right: 14, top: 12, bottom: 32 };
    const w = cssW - pad.left - pad.right;
    const h = cssH - pad.top - pad.bottom;
    const frames = row.frames;
    const tMax = Math.max(...frames.map((f) => f.time_s), 0.001);
    const x = (t) => pad.left + (t / tMax) * w;
    const y = (p) => pad.top + (1 - p) * h;

    // uncertain band and threshold
    const lo = Math.max(0, row.threshold - row.uncertain_band);
    const hi = Math.min(1, row.threshold + row.uncertain_band);
    ctx.fillStyle = "rgba(138, 90, 0, 0.12)";
    ctx.fillRect(pad.left, y(hi), w, y(lo) - y(hi));

    // axes and grid
    ctx.strokeStyle = "#d5d9e0";
    ctx.fillStyle = "#5b6475";
    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      ctx.beginPath();
      ctx.moveTo(pad.left, y(p));
      ctx.lineTo(pad.left + w, y(p));
      ctx.stroke();
      ctx.fillText(Math.round(p * 100) + "%", pad.left - 6, y(p));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const step = niceStep(tMax, 6);
    const digits = step < 1 ? Math.min(3, Math.ceil(-Math.log10(step))) : 0;
    for (let t = 0; t <= tMax + step * 1e-6; t += step) {
      ctx.fillText(t.toFixed(digits) + " s", x(t), pad.top + h + 6);
    }

    ctx.strokeStyle = "#1d2330";
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    ctx.moveTo(pad.left, y(row.threshold));
    ctx.lineTo(pad.left + w, y(row.threshold));
    ctx.stroke();
    ctx.setLineDash([]);

    // scores
    ctx.strokeStyle = "#2456c7";
    ctx.lineWidth = 2;
    ctx.beginPath();
    frames.forEach((f, i) => {
      if (i === 0) ctx.moveTo(x(f.time_s), y(f.score));
      else ctx.lineTo(x(f.time_s), y(f.score));
    });
    ctx.stroke();
    for (const f of frames) {
      ctx.fillStyle = f.score >= row.threshold ? "#b3261e" : "#1b7a3a";
      ctx.beginPath();
      ctx.arc(x(f.time_s), y(f.score), 3.5, 0, 2 * Math.PI);
      ctx.fill();
    }

    const scores = frames.map((f) => f.score);
    const top = frames.reduce((a, f) => (f.score > a.score ? f : a), frames[0]);
    $("timeline-summary").textContent = frames.length + " frames over " + tMax.toFixed(1) +
      " s: P(fake) from " + pct(Math.min(...scores)) + " to " + pct(Math.max(...scores)) +
      ", highest at " + top.time_s.toFixed(2) + " s. Dashed line: threshold " +
      pct(row.threshold) + "; shaded: uncertain band.";
  }

  // A round tick spacing (1, 2 or 5 times a power of ten) giving at most maxTicks intervals.
  function niceStep(span, maxTicks) {
    const raw = span / maxTicks;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) {
      if (m * power >= raw) return m * power;
    }
    return 10 * power;
  }

  // --------------------------------------------------------------------------------- wiring
  function wire() {
    const input = $("file-input");
    input.addEventListener("change", () => {
      if (input.files && input.files[0]) analyse(input.files[0]);
      input.value = "";
    });
    const zone = $("drop-zone");
    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("dragover");
      }));
    ["dragleave", "drop"].forEach((type) =>
      zone.addEventListener(type, () => zone.classList.remove("dragover")));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (file) analyse(file);
    });
    // a file dropped outside the zone must not make the browser navigate away
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    $("heatmap-toggle").addEventListener("change", toggleHeatmap);
    $("cancel-button").addEventListener("click", cancelByUser);
    $("key-form").addEventListener("submit", submitKey);
    $("forget-key").addEventListener("click", forgetKey);
    window.addEventListener("resize", () => {
      if (state.row && state.row.kind === "video" && state.row.frames) drawTimeline(state.row);
    });
    state.apiKey = storedKey();
    loadModelInfo().then((status) => {
      if (status === 401) askForKey("");
      else keyAccepted();
    });
  }

  document.addEventListener("DOMContentLoaded", wire);
})();
