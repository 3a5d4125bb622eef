// diffmesh app: choose a video, start a job, follow it, show the result. Talks to server.py's API only.
"use strict";

const STAGES = ["setup", "decode+keypoints", "diffmesh", "body", "world", "export", "render"];
const COLORS = ["#4a78c2", "#d2693f", "#4e9a3f", "#c59a22", "#8a5cc8", "#2a9a9a"];
const $ = (id) => document.getElementById(id);
let chosenFile = null;
let shownJob = null;     // the job whose result is on the page
let watchedJob = null;   // the job submitted last: its result is shown when it is done
let fps = 30;
let maxUploadMb = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function chooseFile(file) {
  chosenFile = file || null;
  $("file-label").textContent = file ? `${file.name} (${(file.size / 2 ** 20).toFixed(1)} MB)` :
    "Drop a video here, or click to choose one";
  if (file) $("use-sample").checked = false;
}

function options() {
  const q = new URLSearchParams();
  q.set("max_people", $("max-people").value);
  if ($("side-view").checked) q.set("side_view", "1");
  if ($("top-view").checked) q.set("top_view", "1");
  if ($("focal").value) q.set("focal", $("focal").value);
  q.set("body", $("body").value);
  q.set("exports", [...document.querySelectorAll(".export:checked")].map((e) => e.value).join(","));
  return q;
}

async function start() {
  showError("");
  const q = options();
  let body = null;
  if ($("use-sample").checked) {
    q.set("sample", "1");
  } else if (chosenFile) {
    if (maxUploadMb && chosenFile.size > maxUploadMb * 2 ** 20) {
      showError(`This video is larger than the app's limit of ${maxUploadMb} MB: cut it, or start the app with `
        + "--max-upload-mb.");
      return;
    }
    q.set("name", chosenFile.name);
    body = chosenFile;
  } else {
    showError("Choose a video first, or tick the sample video.");
    return;
  }
  $("start-button").disabled = true;
  try {
    const response = await fetch(`/api/jobs?${q}`, {method: "POST", body,
      headers: {"Content-Type": "application/octet-stream"}});
    const answer = await response.json().catch(() => ({error: `the server answered ${response.status}`}));
    if (!response.ok) {
      showError(answer.error || answer.detail || `the server answered ${response.status}`);
      return;
    }
    watchedJob = answer.id;
    refresh();
  } catch (e) {
    showError(`The upload failed: ${e}`);
  } finally {
    $("start-button").disabled = false;
  }
}

function stageChips(job) {
  const done = job.state === "done";
  return STAGES.filter((s) => s !== "render" || job.stages.includes("render") || !done).map((s) => {
    const i = job.stages.indexOf(s);
    const now = job.state === "running" && i === job.stages.length - 1;
    const cls = now ? "now" : (i >= 0 || done ? "done" : "");
    return `<span class="stage ${cls}" data-stage="${s}">${s}</span>`;
  }).join("");
}

function jobLine(job) {
  const li = document.createElement("li");
  li.dataset.job = job.id;
  li.dataset.state = job.state;
  const name = document.createElement("b");
  name.textContent = job.name;                       // text, never HTML: the name is the user's
  li.append(name, " ");
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = job.state === "queued" ? `waiting (${job.place} ahead)` : job.state;
  li.append(state, " ");
  const chips = document.createElement("span");
  chips.innerHTML = job.state === "running" || job.state === "done" ? stageChips(job) : "";
  li.append(chips);
  if (job.state === "queued" || job.state === "running") {
    const cancel = document.createElement("button");
    cancel.className = "secondary cancel";
    cancel.textContent = "Cancel";
    cancel.onclick = () => fetch(`/api/jobs/${job.id}/cancel`, {method: "POST"}).then(refresh);
    li.append(" ", cancel);
  }
  if (job.state === "failed") {
    const why = document.createElement("span");
    why.className = "job-error";
    why.textContent = `: ${job.error}`;
    li.append(why);
  }
  if (job.state === "done") {
    const show = document.createElement("button");
    show.className = "secondary show";
    show.textContent = "Show";
    show.onclick = () => showResult(job);
    li.append(" ", show);
  }
  return li;
}

async function refresh() {
  const jobs = await fetch("/api/jobs").then((r) => r.json()).catch(() => null);
  if (!jobs) return;
  $("no-jobs").hidden = jobs.length > 0;
  $("jobs").replaceChildren(...jobs.map(jobLine));
  const watched = jobs.find((j) => j.id === watchedJob);
  if (watched && watched.state === "done" && shownJob !== watched.id) showResult(watched);
  if (watched && watched.state === "failed" && watchedJob) {
    showError(watched.error);
    watchedJob = null;
  }
}

function fileUrl(job, name) {
  const file = job.files.find((f) => f.name === name);
  return file ? file.url : null;
}

function showResult(job) {
  shownJob = job.id;
  $("result").hidden = false;
  $("result-name").textContent = job.name;
  const report = job.report || {};
  const frames = report.frames || 0;
  const total = (report.seconds || {}).total || 0;
  fps = report.fps || 30;
  $("overlay").src = fileUrl(job, "overlay.mp4") || "";
  const viewer = $("viewer");
  const aim = () => {                // look where the bodies are, not at the rest pose at the origin
    if (!report.view) return;
    const [x, y, z] = report.view.target;
    viewer.cameraTarget = `${x}m ${y}m ${z}m`;
    viewer.cameraOrbit = `0deg 75deg ${report.view.distance}m`;
    viewer.jumpCameraToGoal();
  };
  aim();
  viewer.addEventListener("load", aim, {once: true});   // the viewer frames a new model itself when it loads
  viewer.src = fileUrl(job, "mesh.glb") || "";
  $("warnings").textContent = (report.warnings || []).join(" ");
  $("downloads").replaceChildren(...job.files.map((f) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = f.url;
    a.textContent = `${f.name} (${(f.size / 1024).toFixed(0)} kB)`;
    a.setAttribute("download", f.name);
    li.append(a);
    return li;
  }));
  drawJitter(report.jitter || []);
  $("result").dataset.frames = frames;
  $("result").dataset.seconds = total;
}

function drawJitter(people) {
  const svg = $("jitter");
  const values = people.flat().filter((v) => v !== null);
  const top = Math.max(1, ...values) * 1.05;
  const n = Math.max(1, ...people.map((p) => p.length));
  const parts = [`<text x="4" y="14" font-size="12">${top.toFixed(0)} mm/frame²</text>`,
    `<text x="4" y="196" font-size="12">0</text>`, `<text x="740" y="196" font-size="12">frame ${n + 1}</text>`];
  people.forEach((series, p) => {
    let d = "";
    series.forEach((v, t) => {
      if (v === null) return;
      const x = (t / Math.max(1, n - 1)) * 800;
      const y = 200 - (v / top) * 200;
      d += `${d && series[t - 1] !== null ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    parts.push(`<path d="${d}" fill="none" stroke="${COLORS[p % COLORS.length]}" stroke-width="1.5"
                vector-effect="non-scaling-stroke" class="jitter-line"/>`);
  });
  svg.innerHTML = parts.join("");
}

function followViewer() {
  const viewer = $("viewer");
  if (viewer.duration) {
    if (!viewer.paused) $("scrubber").value = Math.round((viewer.currentTime / viewer.duration) * 1000);
    $("frame-label").textContent = `frame ${Math.round(viewer.currentTime * fps)}`;
  }
  requestAnimationFrame(followViewer);
}

function setUp() {
  $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    chooseFile(e.dataTransfer.files[0]);
  });
  $("start-button").addEventListener("click", start);
  $("play").addEventListener("click", () => {
    const viewer = $("viewer");
    if (viewer.paused) { viewer.play(); $("play").textContent = "Pause"; }
    else { viewer.pause(); $("play").textContent = "Play"; }
  });
  $("scrubber").addEventListener("input", (e) => {
    const viewer = $("viewer");
    viewer.pause();
    $("play").textContent = "Play";
    if (viewer.duration) viewer.currentTime = (e.target.value / 1000) * viewer.duration;
  });
  fetch("/api/info").then((r) => r.json()).then((info) => {
    $("sample-name").textContent = info.sample;
    maxUploadMb = info.max_upload_mb;
    document.body.dataset.ready = "1";
  });
  requestAnimationFrame(followViewer);
  refresh();
  setInterval(refresh, 500);
}

setUp();
