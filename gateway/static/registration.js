// The avatar registration page: upload with progress, poll the analysis job, show the report and preview.
"use strict";

const POLL_MS = 200;
const STAGE_ORDER = ["upload", "queued", "decode", "analyse", "store", "done"];
const $ = (id) => document.getElementById(id);
let chosenFile = null;
// What the page went through, for people debugging it in the console (and for the browser tests).
const trace = { stagesSeen: [], uploadEvents: 0 };
window.avatarRegistration = trace;

function chooseFile(file) {
  chosenFile = file || null;
  const thumb = $("drop-thumb");
  $("file-name").textContent = chosenFile ? `${chosenFile.name} · ${(chosenFile.size / 1e6).toFixed(2)} MB` : "";
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.hidden = !(chosenFile && chosenFile.type.startsWith("image/"));
  if (!thumb.hidden) thumb.src = URL.createObjectURL(chosenFile);
}

function wireDropZone() {
  const drop = $("drop");
  const input = $("file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => chooseFile(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) chooseFile(event.dataTransfer.files[0]);
  });
}

function authHeaders() {
  const token = $("token").value.trim();
  sessionStorage.setItem("avatar-token", token);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function withToken(url) {
  const token = $("token").value.trim();
  return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
}

function showStage(stage, fraction) {
  const reached = STAGE_ORDER.indexOf(stage);
  for (const item of $("stages").children) {
    const index = STAGE_ORDER.indexOf(item.dataset.stage);
    item.classList.toggle("done", index < reached || stage === "done");
    item.classList.toggle("current", index === reached && stage !== "done");
  }
  if (fraction !== undefined) {
    $("analysis-progress").value = fraction;
    $("analysis-percent").textContent = `${Math.round(fraction * 100)}%`;
  }
  $("stages").dataset.current = stage;
  if (trace.stagesSeen[trace.stagesSeen.length - 1] !== stage) trace.stagesSeen.push(stage);
}

function showError(error) {
  $("error").hidden = false;
  $("error-code").textContent = error.code || "error";
  $("error-message").textContent = error.message || "";
  if (error.report) showReport(error.report);
}

function showReport(report) {
  $("report").hidden = false;
  const verdict = $("report-verdict");
  verdict.textContent = report.passed ? (report.warnings.length ? "accepted with warnings" : "passed") : "refused";
  verdict.className = `badge ${report.passed ? (report.warnings.length ? "warnings" : "passed") : "error"}`;
  $("warnings").replaceChildren(...report.warnings.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
  $("checks").replaceChildren(...report.checks.map((check) => {
    const row = document.createElement("tr");
    row.dataset.check = check.name;
    const outcome = check.ok ? "ok" : check.severity;
    for (const [text, cls] of [[check.name.replaceAll("_", " "), ""], [outcome, outcome], [check.message, ""]]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.append(cell);
    }
    return row;
  }));
}

function showResult(result) {
  const avatar = result.avatar;
  $("result").hidden = false;
  $("result-name").textContent = avatar.name;
  $("result-id").textContent = avatar.avatar_id;
  const seconds = (result.analysis.analysis_ms / 1000).toFixed(2);
  $("result-summary").textContent =
    `${avatar.media_kind}, ${avatar.frame_count} frame(s) of ${avatar.width}×${avatar.height}, analysed in ${seconds} s`;
  $("result-description").textContent = avatar.description;
  $("result-voice").textContent = avatar.tts ? [avatar.tts, avatar.voice].filter(Boolean).join(" · ")
    : "the server's default";
  $("preview").src = withToken(avatar.preview_url);
  showReport(result.report);
}

function upload(form) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/avatar/register?async=true");
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      trace.uploadEvents += 1;
      $("upload-progress").value = event.loaded / event.total;
      $("upload-percent").textContent = `${Math.round((100 * event.loaded) / event.total)}%`;
    });
    request.addEventListener("load", () => resolve({ status: request.status, body: request.response || {} }));
    request.addEventListener("error", () => reject(new Error("the upload failed: is the server running?")));
    request.send(form);
  });
}

async function poll(statusUrl) {
  for (;;) {
    const response = await fetch(statusUrl, { headers: authHeaders(), cache: "no-store" });
    const job = await response.json();
    if (!response.ok) return { error: job };
    showStage(job.stage, job.progress);
    if (job.state === "done") return { result: job.result };
    if (job.state === "failed") return { error: job.error };
    await new Promise((done) => setTimeout(done, POLL_MS));
  }
}

async function register(event) {
  event.preventDefault();
  for (const id of ["error", "result", "report"]) $(id).hidden = true;
  if (!chosenFile) {
    showError({ code: "missing_file", message: "Choose or drop a photo, GIF or video first." });
    return;
  }
  const form = new FormData();
  form.append("avatar_name", $("avatar-name").value);
  form.append("user_id", $("user-id").value);
  form.append("description", $("description").value);
  // Optional: the avatar's default voice; left out when empty, so the server's settings decide.
  for (const field of ["tts", "voice"]) {
    const value = $(field).value.trim();
    if (value) form.append(field, value);
  }
  form.append("file", chosenFile, chosenFile.name);
  $("submit").disabled = true;
  $("progress").hidden = false;
  $("upload-progress").value = 0;
  trace.stagesSeen = [];
  trace.uploadEvents = 0;
  showStage("upload", 0);
  try {
    const answer = await upload(form);
    $("upload-progress").value = 1;
    $("upload-percent").textContent = "100%";
    if (answer.status !== 202) {
      showError(answer.body);
      return;
    }
    showStage(answer.body.stage, answer.body.progress);
    const outcome = await poll(answer.body.status_url);
    if (outcome.result) showResult(outcome.result);
    else showError(outcome.error);
  } catch (error) {
    showError({ code: "network_error", message: String(error.message || error) });
  } finally {
    $("submit").disabled = false;
  }
}

function init() {
  wireDropZone();
  $("token").value = sessionStorage.getItem("avatar-token") || "";
  $("form").addEventListener("submit", register);
  document.body.dataset.ready = "true";
}

init();
