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

  const state = { file: null, objectUrl: null, row: null, heatmap: null, limits: null, busy: false };

  // ------------------------------------------------------------------------------ helpers
  function show(el, visible) { el.hidden = !visible; }
  function pct(x) { return (100 * x).toFixed(1) + "%"; }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    show(box, Boolean(text));
  }

  function setStatus(text) { $("status").textContent = text; }

  async function readError(resp) {
    let detail = "";
    try {
      const body = await resp.json();
      detail = body && (body.detail || body.error) ? String(body.detail || body.error) : "";
    } catch (e) {
      detail = "";
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

  // ----------------------------------------------------------------------------- model info
  async function loadModelInfo() {
    try {
      const resp = await fetch("/v1/model");
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const info = await resp.json();
      state.limits = info.limits || null;
      $("model-info").textContent = "Model: " + info.name + " · threshold " +
        pct(info.threshold) + " ± " + pct(info.uncertain_band) + " uncertain band";
      if (state.limits) {
        $("limits").textContent = "JPEG, PNG, GIF, WebP, BMP, TIFF images; MP4, MOV, WebM, " +
          "MKV, AVI videos. Up to " + state.limits.max_upload_mb + " MB; videos are judged on " +
          "up to " + ((info.video && info.video.frames) || 16) + " frames.";
      }
    } catch (e) {
      $("model-info").textContent = "Model information is unavailable.";
    }
  }

  // --------------------------------------------------------------------------------- upload
  async function upload(file, explain) {
    const form = new FormData();
    form.append("file", file, file.name);
    const url = "/v1/detect" + (explain ? "?explain=true" : "");
    return fetch(url, { method: "POST", body: form });
  }

  function resetResult(file) {
    state.row = null;
    state.heatmap = null;
    $("heatmap-toggle").checked = false;
    $("heatmap-toggle").disabled = false;
    $("heatmap-status").textContent = "";
    show($("heatmap-image"), false);
    show($("verdict-panel"), false);
    show($("timeline-panel"), false);
    show($("heatmap-controls"), false);
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

  async function analyse(file) {
    if (!file || state.busy) return;
    state.file = file;
    showError("");
    resetResult(file);
    show($("result"), true);
    showPreview(file);
    const maxMb = state.limits && state.limits.max_upload_mb;
    if (maxMb && file.size > maxMb * 1024 * 1024) {
      setStatus("");
      showError(file.name + " is larger than the upload limit of " + maxMb + " MB.");
      return;
    }
    state.busy = true;
    setStatus("Analysing " + file.name + "…");
    try {
      const resp = await upload(file, false);
      if (!resp.ok) {
        setStatus("");
        show($("result"), false);
        showError(await readError(resp));
        return;
      }
      const row = await resp.json();
      state.row = row;
      setStatus("Done in " + Math.round(row.time_ms) + " ms.");
      renderRow(row);
    } catch (e) {
      setStatus("");
      show($("result"), false);
      showError("Could not reach the server: " + e.message);
    } finally {
      state.busy = false;
    }
  }

  // --------------------------------------------------------------------------------- result
  function renderRow(row) {
    const verdict = $("verdict");
    verdict.textContent = row.verdict;
    verdict.className = "verdict " + row.verdict;
    $("verdict-words").textContent = row.reason
      ? "Uncertain: this image is " + row.reason + ", so the score is not to be trusted."
      : WORDS[row.verdict] || "";
    $("probability").textContent = pct(row.score);
    renderBar(row);
    const details = [];
    if (row.width && row.height) details.push(row.width + "×" + row.height + " px");
    if (row.kind === "video" && row.n_frames) {
      details.push(row.n_frames + " frames, " + row.aggregate + " of their scores");
    }
    details.push("model " + row.model);
    $("details").textContent = details.join(" · ");
    show($("verdict-panel"), true);
    show($("heatmap-controls"), row.kind === "image");
    if (row.kind === "video" && row.frames && row.frames.length) {
      show($("timeline-panel"), true);
      drawTimeline(row);
    }
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
    const text = "P(fake) " + pct(row.score) + " on a scale from real (0%) to fake (100%); " +
      "threshold " + pct(t) + ", uncertain between " + pct(lo) + " and " + pct(hi) + ".";
    $("score-bar").setAttribute("aria-label", text);
    $("score-legend").textContent = "Line: threshold " + pct(t) + ". Hatched: uncertain band " +
      pct(lo) + "–" + pct(hi) + ". Dot: this file.";
  }

  // -------------------------------------------------------------------------------- heatmap
  async function toggleHeatmap() {
    const on = $("heatmap-toggle").checked;
    if (!on) {
      show($("heatmap-image"), false);
      show($("preview-image"), true);
      $("preview-caption").textContent = "";
      return;
    }
    if (!state.heatmap) {
      await fetchHeatmap();
      if (!state.heatmap) {
        $("heatmap-toggle").checked = false;
        return;
      }
    }
    $("heatmap-image").src = "data:image/png;base64," + state.heatmap.png;
    show($("heatmap-image"), true);
    show($("preview-image"), false);
    $("preview-caption").textContent = "Heatmap (" + state.heatmap.method + ") over the part " +
      "of the image the model saw (resized and cropped). Warm colours pushed it towards fake.";
  }

  async function fetchHeatmap() {
    const toggle = $("heatmap-toggle");
    toggle.disabled = true;
    $("heatmap-status").textContent = "Computing heatmap…";
    try {
      const resp = await upload(state.file, true);
      if (!resp.ok) {
        $("heatmap-status").textContent = "";
        showError(await readError(resp));
        return;
      }
      const row = await resp.json();
      if (!row.heatmap_png) {
        $("heatmap-status").textContent = row.heatmap_error || "No heatmap for this model.";
        return;
      }
      state.heatmap = { png: row.heatmap_png, method: row.heatmap_method || "heatmap" };
      $("heatmap-status").textContent = "";
    } catch (e) {
      $("heatmap-status").textContent = "";
      showError("Could not reach the server: " + e.message);
    } finally {
      toggle.disabled = false;
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
    window.addEventListener("resize", () => {
      if (state.row && state.row.kind === "video" && state.row.frames) drawTimeline(state.row);
    });
    loadModelInfo();
  }

  document.addEventListener("DOMContentLoaded", wire);
})();
