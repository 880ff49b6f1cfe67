// The avatar registration page: upload with progress, poll the analysis job, show the report and preview; list
// and delete the user's avatars; English or Persian (RTL) interface, as the player's toggle does it.
"use strict";

const TEXT = {
  en: {
    title: "Register an avatar", player: "Player", switchTo: "English",
    dropHint: "Drop a photo, GIF or short video here, or click to choose one.",
    dropLimits: "JPG, PNG, GIF, MP4, MOV, WebM · up to 50 MB (the server's MAX_UPLOAD_BYTES) · one face, facing the camera",
    name: "Name", nameHint: "(Persian or English)", namePlaceholder: "e.g. Sara — سارا",
    description: "Description", optional: "(optional)",
    tts: "Voice backend", ttsHint: "(optional: the avatar's default)", ttsDefault: "the server's default (TTS_ENGINE)",
    voice: "Voice", voiceHint: "(optional, e.g. f3, m3 for espeak; nova for OpenAI)",
    userId: "User id", token: "Access token", tokenHint: "(not needed in dev mode)", register: "Register",
    progress: "Progress", upload: "Upload", analysis: "Analysis",
    stageUpload: "Upload", stageQueued: "Queued", stageDecode: "Decode frames", stageAnalyse: "Find and track the face",
    stageStore: "Store face data", stageDone: "Done",
    notRegistered: "Not registered", registered: "Registered:", id: "id", defaultVoice: "default voice:",
    previewCaption: "Detected face (green box) and its 68 landmarks (mouth in red).",
    report: "Quality report", check: "Check", checkResult: "Result", details: "Details",
    passed: "passed", withWarnings: "accepted with warnings", refused: "refused", serverDefault: "the server's default",
    summary: "{kind}, {frames} frame(s) of {width}×{height}, analysed in {seconds} s",
    missingFile: "Choose or drop a photo, GIF or video first.",
    uploadFailed: "the upload failed: is the server running?",
    mine: "Avatars of", refresh: "Refresh", listLoading: "Loading…", listEmpty: "No avatars yet.",
    listFailed: "The list could not be loaded:", listItem: "{kind} · {frames} frame(s)", delete: "Delete",
    confirmDelete: "Delete the avatar “{name}”?", deleted: "Deleted “{name}”.", deleteFailed: "Not deleted:",
  },
  fa: {
    title: "ثبت آواتار", player: "پخش‌کننده", switchTo: "فارسی",
    dropHint: "عکس، GIF یا ویدیوی کوتاه را اینجا رها کنید، یا برای انتخاب کلیک کنید.",
    dropLimits: "JPG، PNG، GIF، MP4، MOV، WebM · تا ۵۰ مگابایت (MAX_UPLOAD_BYTES سرور) · یک چهره، رو به دوربین",
    name: "نام", nameHint: "(فارسی یا انگلیسی)", namePlaceholder: "مثلاً سارا — Sara",
    description: "توضیحات", optional: "(اختیاری)",
    tts: "موتور صدا", ttsHint: "(اختیاری: صدای پیش‌فرض آواتار)", ttsDefault: "پیش‌فرض سرور (TTS_ENGINE)",
    voice: "صدا", voiceHint: "(اختیاری، مثلاً f3 یا m3 برای espeak؛ nova برای OpenAI)",
    userId: "شناسهٔ کاربر", token: "توکن دسترسی", tokenHint: "(در حالت توسعه لازم نیست)", register: "ثبت",
    progress: "پیشرفت", upload: "بارگذاری", analysis: "تحلیل",
    stageUpload: "بارگذاری", stageQueued: "در صف", stageDecode: "خواندن فریم‌ها", stageAnalyse: "یافتن و دنبال کردن چهره",
    stageStore: "ذخیرهٔ داده‌های چهره", stageDone: "پایان",
    notRegistered: "ثبت نشد", registered: "ثبت شد:", id: "شناسه", defaultVoice: "صدای پیش‌فرض:",
    previewCaption: "چهرهٔ یافته‌شده (کادر سبز) و ۶۸ نقطهٔ آن (دهان به رنگ قرمز).",
    report: "گزارش کیفیت", check: "بررسی", checkResult: "نتیجه", details: "جزئیات",
    passed: "قبول", withWarnings: "پذیرفته با هشدار", refused: "رد شد", serverDefault: "پیش‌فرض سرور",
    summary: "{kind}، {frames} فریم {width}×{height}، تحلیل در {seconds} ثانیه",
    missingFile: "اول یک عکس، GIF یا ویدیو انتخاب کنید یا اینجا رها کنید.",
    uploadFailed: "بارگذاری انجام نشد: آیا سرور در حال اجراست؟",
    mine: "آواتارهای", refresh: "تازه‌سازی", listLoading: "در حال بارگذاری…", listEmpty: "هنوز آواتاری ندارد.",
    listFailed: "فهرست بارگذاری نشد:", listItem: "{kind} · {frames} فریم", delete: "حذف",
    confirmDelete: "آواتار «{name}» حذف شود؟", deleted: "«{name}» حذف شد.", deleteFailed: "حذف نشد:",
  },
};
const LANGUAGE_KEY = "registration.ui";
let lang = "en";
const numbers = {};

function t(key, values = {}) {
  const template = TEXT[lang][key] ?? TEXT.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

// Digits in the interface's own script (۱۲۳ in Persian); ids, codes and file names keep theirs.
function number(value, digits = 0) {
  const key = `${lang}:${digits}`;
  numbers[key] ??= new Intl.NumberFormat(lang === "fa" ? "fa-IR" : "en-US",
    { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false });
  return numbers[key].format(value);
}

function percent(fraction) { return lang === "fa" ? `${number(Math.round(fraction * 100))}٪` : `${Math.round(fraction * 100)}%`; }

const POLL_MS = 200;
const STAGE_ORDER = ["upload", "queued", "decode", "analyse", "store", "done"];
const $ = (id) => document.getElementById(id);
let chosenFile = null;
let shown = { result: null, report: null, error: null, file: null };  // re-rendered when the language changes
let avatars = null;  // the listed user's avatars, once loaded
// What the page went through, for people debugging it in the console (and for the browser tests).
const trace = { stagesSeen: [], uploadEvents: 0, listed: null };  // listed: avatars in the last list loaded
window.avatarRegistration = trace;

function showFileName() {
  // The name in an isolate of its own (<bdi>): a Persian or digit-led name cannot pull the size into its run.
  $("file-name-text").textContent = chosenFile ? chosenFile.name : "";
  $("file-size").textContent = chosenFile ? `· ${number(chosenFile.size / 1e6, 2)} MB` : "";
}

function chooseFile(file) {
  chosenFile = file || null;
  const thumb = $("drop-thumb");
  showFileName();
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
    $("analysis-percent").textContent = percent(fraction);
  }
  $("stages").dataset.current = stage;
  if (trace.stagesSeen[trace.stagesSeen.length - 1] !== stage) trace.stagesSeen.push(stage);
}

function showError(error) {
  shown.error = error;
  $("error").hidden = false;
  $("error-code").textContent = error.code || "error";
  $("error-message").textContent = error.message || "";
  if (error.report) showReport(error.report);
}

function showReport(report) {
  shown.report = report;
  $("report").hidden = false;
  const verdict = $("report-verdict");
  verdict.textContent = t(report.passed ? (report.warnings.length ? "withWarnings" : "passed") : "refused");
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

function showResult(result, fileName) {
  shown.result = result;
  shown.file = fileName;
  const avatar = result.avatar;
  $("result").hidden = false;
  $("result-name").textContent = avatar.name;
  $("result-file").textContent = fileName || "";
  $("result-id").textContent = avatar.avatar_id;
  $("result-summary").textContent = t("summary", {
    kind: avatar.media_kind, frames: number(avatar.frame_count), width: number(avatar.width),
    height: number(avatar.height), seconds: number(result.analysis.analysis_ms / 1000, 2) });
  $("result-description").textContent = avatar.description;
  $("result-voice").textContent = avatar.tts ? [avatar.tts, avatar.voice].filter(Boolean).join(" · ")
    : t("serverDefault");
  const preview = withToken(avatar.preview_url);
  if (!$("preview").src.endsWith(preview)) $("preview").src = preview;
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
      $("upload-percent").textContent = percent(event.loaded / event.total);
    });
    request.addEventListener("load", () => resolve({ status: request.status, body: request.response || {} }));
    request.addEventListener("error", () => reject(new Error(t("uploadFailed"))));
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
  shown = { result: null, report: null, error: null, file: null };
  if (!chosenFile) {
    showError({ code: "missing_file", message: t("missingFile") });
    return;
  }
  const fileName = chosenFile.name;
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
    $("upload-percent").textContent = percent(1);
    if (answer.status !== 202) {
      showError(answer.body);
      return;
    }
    showStage(answer.body.stage, answer.body.progress);
    const outcome = await poll(answer.body.status_url);
    if (outcome.result) {
      showResult(outcome.result, fileName);
      loadAvatars();
    } else showError(outcome.error);
  } catch (error) {
    showError({ code: "network_error", message: String(error.message || error) });
  } finally {
    $("submit").disabled = false;
  }
}

// --- the user's avatars: GET /avatar/list?user_id=…, DELETE /avatar/{id} ----------------------------------

function listedUser() { return $("user-id").value.trim(); }

function renderAvatars() {
  $("mine-user").textContent = listedUser();
  if (avatars === null) return;
  $("avatar-list").replaceChildren(...avatars.map((avatar) => {
    const item = document.createElement("li");
    item.dataset.avatarId = avatar.avatar_id;
    const name = document.createElement("bdi");
    name.className = "avatar-name";
    name.textContent = avatar.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    const id = document.createElement("bdi");
    id.className = "avatar-id";
    id.dir = "ltr";
    id.textContent = avatar.avatar_id;
    meta.append(id, ` · ${t("listItem", { kind: avatar.media_kind, frames: number(avatar.frame_count) })}`);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet delete";
    remove.textContent = t("delete");
    item.append(name, " ", meta, " ", remove);
    return item;
  }));
  if (!avatars.length) $("mine-status").textContent = t("listEmpty");
}

function listStatus(key, error) {
  $("mine-status").textContent = error ? `${t(key)} ${error.code || ""} ${error.message || ""}`.trim() : t(key);
}

async function loadAvatars() {
  const user = listedUser();
  $("mine-user").textContent = user;
  if (!user) return;
  listStatus("listLoading");
  try {
    const response = await fetch(`/avatar/list?user_id=${encodeURIComponent(user)}`,
      { headers: authHeaders(), cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      avatars = [];
      renderAvatars();
      listStatus("listFailed", body);
      return;
    }
    avatars = body.avatars;
    trace.listed = avatars.length;
    $("mine-status").textContent = "";
    renderAvatars();
  } catch (error) {
    listStatus("listFailed", { message: String(error.message || error) });
  }
}

async function deleteAvatar(avatarId) {
  const avatar = (avatars || []).find((a) => a.avatar_id === avatarId);
  if (!avatar || !window.confirm(t("confirmDelete", { name: avatar.name }))) return;
  const response = await fetch(`/avatar/${encodeURIComponent(avatarId)}`, { method: "DELETE", headers: authHeaders() });
  if (!response.ok) {
    listStatus("deleteFailed", await response.json().catch(() => ({ code: `HTTP ${response.status}` })));
    return;
  }
  await loadAvatars();
  $("mine-status").textContent = t("deleted", { name: avatar.name });
}

// --- the interface language (the player's toggle: ?ui=fa, remembered, else the browser's language) --------

function applyLanguage() {
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === "fa" ? "rtl" : "ltr";
  document.title = t("title");
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) {
    element.placeholder = t(element.dataset.i18nPlaceholder);
  }
  $("ui-language").textContent = lang === "fa" ? TEXT.en.switchTo : TEXT.fa.switchTo;
  $("ui-language").lang = lang === "fa" ? "en" : "fa";
  showFileName();
  if (shown.result) showResult(shown.result, shown.file);
  else if (shown.report) showReport(shown.report);
  $("upload-percent").textContent = percent($("upload-progress").value);
  $("analysis-percent").textContent = percent($("analysis-progress").value);
  renderAvatars();
}

function init() {
  wireDropZone();
  $("token").value = sessionStorage.getItem("avatar-token") || "";
  $("form").addEventListener("submit", register);
  lang = new URLSearchParams(location.search).get("ui") || localStorage.getItem(LANGUAGE_KEY)
    || (navigator.language.startsWith("fa") ? "fa" : "en");
  if (!TEXT[lang]) lang = "en";
  $("ui-language").addEventListener("click", () => {
    lang = lang === "fa" ? "en" : "fa";
    localStorage.setItem(LANGUAGE_KEY, lang);
    applyLanguage();
  });
  $("refresh").addEventListener("click", loadAvatars);
  $("user-id").addEventListener("change", loadAvatars);
  $("token").addEventListener("change", loadAvatars);
  $("avatar-list").addEventListener("click", (event) => {
    const button = event.target.closest("button.delete");
    if (button) deleteAvatar(button.closest("li").dataset.avatarId);
  });
  applyLanguage();
  loadAvatars();
  document.body.dataset.ready = "true";
}

init();
