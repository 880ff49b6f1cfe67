// The web player: /ws/stream chunks → one MSE SourceBuffer on one timeline (or the session as WebRTC tracks,
// POST /webrtc/offer, falling back to MSE), subtitles, interrupt, latency.
"use strict";

const TEXT = {
  en: {
    title: "Talking avatar", connecting: "connecting…", open: "connected", closed: "reconnecting…",
    idle: "idle", speaking: "speaking", avatar: "Avatar", textLabel: "What should it say?",
    detect: "Detect language", send: "Speak", interrupt: "Stop",
    hint: "Ctrl+Enter speaks. Requests queue up and play one after another.",
    placeholder: "Type something and press Speak: the avatar appears with its first word.",
    firstChunk: "First chunk", playStart: "Playback start", margin: "Buffer margin", late: "Late chunks",
    chunks: "Chunks", frames: "Frames shown", rtt: "Round trip", token: "Access token",
    tokenHint: "Only needed when the service is not in dev mode.", switchTo: "English", webrtc: "WebRTC",
    rtcFallback: "WebRTC unavailable, playing over MSE:",
    queued: "queued", playing: "playing", done: "done", interrupted: "interrupted", failed: "failed",
    sending: "sending…", noText: "Type something first.", unsupported: "This browser cannot play",
    avatarsFallback: "avatar list unavailable; using the sample avatar",
  },
  fa: {
    title: "آواتار سخنگو", connecting: "در حال اتصال…", open: "متصل", closed: "اتصال دوباره…",
    idle: "آماده", speaking: "در حال صحبت", avatar: "آواتار", textLabel: "چه بگوید؟",
    detect: "تشخیص خودکار زبان", send: "بگو", interrupt: "توقف",
    hint: "Ctrl+Enter متن را می‌فرستد. درخواست‌ها پشت سر هم پخش می‌شوند.",
    placeholder: "چیزی بنویسید و «بگو» را بزنید: آواتار با اولین کلمه ظاهر می‌شود.",
    firstChunk: "اولین قطعه", playStart: "شروع پخش", margin: "حاشیهٔ بافر", late: "قطعه‌های دیررس",
    chunks: "قطعه‌ها", frames: "فریم‌های نمایش‌داده", rtt: "رفت و برگشت", token: "توکن دسترسی",
    tokenHint: "فقط وقتی سرویس در حالت توسعه نیست لازم است.", switchTo: "فارسی", webrtc: "WebRTC",
    rtcFallback: "WebRTC در دسترس نیست، پخش با MSE:",
    queued: "در صف", playing: "در حال پخش", done: "پایان", interrupted: "متوقف شد", failed: "خطا",
    sending: "در حال ارسال…", noText: "اول چیزی بنویسید.", unsupported: "این مرورگر نمی‌تواند پخش کند",
    avatarsFallback: "فهرست آواتارها در دسترس نیست؛ آواتار نمونه استفاده می‌شود",
  },
};

// Errors that answer a text_input rather than a request already accepted (README's protocol table).
const TEXT_INPUT_ERRORS = new Set(["empty_text", "text_too_long", "unsupported_language", "no_avatar_selected",
  "unavailable", "invalid_message"]);
const PING_EVERY_MS = 10000;
const IDLE_WITHIN_S = 0.08;  // a playhead this close to the end of the buffered media has nothing left to play
const KEEP_BEHIND_S = 30;  // played media kept in the SourceBuffer; older is evicted to stay under quota
const RTC_GATHER_MS = 3000;  // the gateway (aiortc) takes no trickled candidates: the offer waits for all
const RTC_CONNECT_MS = 8000;  // no connection by then: fall back to MSE

const $ = (id) => document.getElementById(id);

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function lastBufferedEnd(sourceBuffer) {
  const ranges = sourceBuffer.buffered;
  return ranges.length ? ranges.end(ranges.length - 1) : 0;
}

/** One MediaSource + one SourceBuffer ('segments' mode); requests are placed end to end on its timeline. */
class MediaTimeline {
  constructor(video, onError) {
    this.video = video;
    this.onError = onError;
    this.url = null;
    this.reset();
  }

  reset() {
    this.generation = (this.generation || 0) + 1;  // operations of the old timeline must not touch the new
    this.ops = [];
    this.busy = false;
    this.sourceBuffer = null;
    this.mime = null;
    this.mediaSource = new MediaSource();
    this.opened = new Promise((resolve) => this.mediaSource.addEventListener("sourceopen", resolve, { once: true }));
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = URL.createObjectURL(this.mediaSource);
    this.video.src = this.url;
  }

  /** Start a request: its init segment goes where everything queued so far ends, gapless. */
  startRequest(request, mime) {
    this.enqueue(async () => {
      const buffer = await this.bufferFor(mime);
      await this.evictPlayed(buffer);
      const end = lastBufferedEnd(buffer);
      request.base = buffer.buffered.length ? end : this.video.currentTime;
      buffer.timestampOffset = request.base;
      // From idle, jump to where this request begins. The idle playhead halts where the shorter track ran out:
      // a few ms before or past the buffered end, and continuing from there across the tiny gap in one
      // track can leave Chromium waiting for ever (measured). While a request still plays, no jump: gapless.
      if (buffer.buffered.length && this.video.currentTime >= end - IDLE_WITHIN_S) {
        this.video.currentTime = request.base;
      }
    });
  }

  /** Append one chunk's bytes; ``onPlaced`` runs once the chunk is on the timeline (for margins, cues). */
  append(bytes, onPlaced) {
    this.enqueue(async () => {
      onPlaced();
      await this.update((buffer) => buffer.appendBuffer(bytes));
    });
  }

  /** Barge-in: drop whatever is queued or buffered ahead of the current frame; the frame stays on screen. */
  clearAhead() {
    this.ops = [];
    const buffer = this.sourceBuffer;
    if (buffer && buffer.updating) buffer.abort();
    this.enqueue(async () => {
      if (!this.sourceBuffer) return;
      const from = this.video.currentTime;
      const to = lastBufferedEnd(this.sourceBuffer);  // the duration is +Infinity: fragments carry no total
      if (to > from + 0.001) await this.update((b) => b.remove(from, to));
      // Seeking to where we are flushes the decoders, so the audio already decoded ahead stops too.
      this.video.currentTime = Math.min(this.video.currentTime, lastBufferedEnd(this.sourceBuffer));
    });
  }

  enqueue(op) {
    this.ops.push(op);
    this.pump();
  }

  async pump() {
    if (this.busy) return;
    const op = this.ops.shift();
    if (!op) return;
    const generation = this.generation;
    this.busy = true;
    try {
      await this.opened;
      await op();
    } catch (error) {
      if (generation === this.generation) this.onError(error);
    }
    if (generation !== this.generation) return;  // reset meanwhile: the new timeline pumps its own queue
    this.busy = false;
    this.pump();
  }

  async bufferFor(mime) {
    if (!MediaSource.isTypeSupported(mime)) throw new Error(`${TEXT.en.unsupported} ${mime}`);
    if (!this.sourceBuffer) {
      this.sourceBuffer = this.mediaSource.addSourceBuffer(mime);
      this.sourceBuffer.mode = "segments";
    } else if (mime !== this.mime && this.sourceBuffer.changeType) {
      this.sourceBuffer.changeType(mime);  // another avatar may bring another H.264 profile or size
    }
    this.mime = mime;
    return this.sourceBuffer;
  }

  async evictPlayed(buffer) {
    const ranges = buffer.buffered;
    const keepFrom = this.video.currentTime - KEEP_BEHIND_S;
    if (ranges.length && keepFrom - ranges.start(0) > KEEP_BEHIND_S) {
      await this.update((b) => b.remove(0, keepFrom));
    }
  }

  update(action) {
    const buffer = this.sourceBuffer;
    return new Promise((resolve, reject) => {
      const done = () => { buffer.removeEventListener("error", failed); resolve(); };
      const failed = () => { buffer.removeEventListener("updateend", done); reject(new Error("SourceBuffer error")); };
      buffer.addEventListener("updateend", done, { once: true });
      buffer.addEventListener("error", failed, { once: true });
      try {
        action(buffer);
      } catch (error) {
        buffer.removeEventListener("updateend", done);
        buffer.removeEventListener("error", failed);
        reject(error);
      }
    });
  }
}

/** Resolves once ``test()`` holds, checked on each ``event`` of ``target``; rejects after ``ms``. */
function until(target, event, test, ms, what) {
  return new Promise((resolve, reject) => {
    if (test()) { resolve(); return; }
    const timer = setTimeout(() => { target.removeEventListener(event, check); reject(new Error(what)); }, ms);
    const check = () => {
      if (!test()) return;
      clearTimeout(timer);
      target.removeEventListener(event, check);
      resolve();
    };
    target.addEventListener(event, check);
  });
}

/** The session's video and audio as WebRTC tracks (POST /webrtc/offer); the WebSocket stays the control
 * channel. Counts the frames shown (requestVideoFrameCallback) for the latency figures and the tests. */
class RtcReceiver {
  constructor(video, onFrame) {
    this.video = video;
    this.onFrame = onFrame;
    this.pc = null;
    this.peerId = null;
    this.sessionId = null;
    this.token = "";
    this.live = false;
    this.frames = 0;
  }

  async connect(sessionId, token) {
    this.close();
    if (typeof RTCPeerConnection !== "function") throw new Error("this browser has no RTCPeerConnection");
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    this.sessionId = sessionId;
    this.token = token;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.addEventListener("track", (event) => stream.addTrack(event.track));
    this.video.srcObject = stream;
    await pc.setLocalDescription(await pc.createOffer());
    await until(pc, "icegatheringstatechange", () => pc.iceGatheringState === "complete", RTC_GATHER_MS,
      "ICE gathering did not finish");
    const response = await fetch("/webrtc/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ session_id: sessionId, sdp: pc.localDescription.sdp, type: "offer" }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`${body.code}: ${body.message}`);
    if (this.pc !== pc) return;  // closed meanwhile
    this.peerId = body.peer_id;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    await until(pc, "connectionstatechange", () => pc.connectionState === "connected", RTC_CONNECT_MS,
      `no WebRTC connection (${pc.connectionState})`);
    this.live = true;
    this.video.play().catch(() => {});
    const frame = (now, meta) => {
      if (this.pc !== pc) return;
      this.frames = meta.presentedFrames;
      this.onFrame(now);
      this.video.requestVideoFrameCallback(frame);
    };
    this.video.requestVideoFrameCallback(frame);
  }

  /** The inbound-rtp figures of each track: packets, bytes, frames decoded, audio energy. */
  async inbound() {
    const found = {};
    if (!this.pc) return found;
    (await this.pc.getStats()).forEach((report) => {
      if (report.type !== "inbound-rtp") return;
      found[report.kind] = { packets: report.packetsReceived, bytes: report.bytesReceived,
        framesDecoded: report.framesDecoded ?? null, audioEnergy: report.totalAudioEnergy ?? null };
    });
    return found;
  }

  /** Drop what the gateway has queued for this peer (the WebSocket's interrupt stops the requests in flight),
   * and mute what Chromium still holds: its jitter buffers keep up to a few hundred ms of the stopped speech
   * (sized by the packets' arrival jitter, docs/clients.md) that no one can flush. ``unmute`` when the next
   * request's first frame shows. */
  interrupt() {
    if (!this.live) return;
    this.video.muted = true;
    const query = `?session_id=${encodeURIComponent(this.sessionId)}`;
    fetch(`/webrtc/peers/${encodeURIComponent(this.peerId)}/interrupt${query}`, { method: "POST", keepalive: true,
      headers: this.token ? { Authorization: `Bearer ${this.token}` } : {} }).catch(() => {});
  }

  unmute() {
    this.video.muted = false;
  }

  close() {
    if (!this.pc) return;
    this.pc.close();
    if (this.peerId) {
      const query = `?session_id=${encodeURIComponent(this.sessionId)}`;
      fetch(`/webrtc/peers/${encodeURIComponent(this.peerId)}${query}`, { method: "DELETE", keepalive: true,
        headers: this.token ? { Authorization: `Bearer ${this.token}` } : {} }).catch(() => {});
    }
    this.pc = null;
    this.peerId = null;
    this.live = false;
    this.video.srcObject = null;
  }
}

/** The WebSocket: select or resume a session, keep it alive with pings, reconnect after a drop. */
class Connection {
  constructor(handlers) {
    this.handlers = handlers;
    this.socket = null;
    this.sessionId = null;
    this.cursor = null;
    this.avatarId = null;
    this.retryMs = 500;
    this.pingTimer = null;
    this.pingSentAt = 0;
  }

  url(token) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    return `${scheme}//${location.host}/ws/stream${query}`;
  }

  open(token) {
    this.token = token;
    const socket = new WebSocket(this.url(token));
    this.socket = socket;
    this.handlers.state("connecting");
    socket.addEventListener("open", () => {
      this.retryMs = 500;
      this.handlers.state("open");
      if (this.sessionId) {
        this.send({ type: "resume", session_id: this.sessionId, cursor: this.cursor ?? -1 });
      } else if (this.avatarId) {
        this.send({ type: "avatar_selection", avatar_id: this.avatarId });
      }
      this.ping();
      this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    });
    socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      clearInterval(this.pingTimer);
      if (this.socket !== socket) return;  // replaced on purpose
      this.handlers.state("closed");
      setTimeout(() => this.open(this.token), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 8000);
    });
  }

  reopen(token) {
    const old = this.socket;
    this.socket = null;
    if (old) old.close();
    this.open(token);
  }

  receive(message) {
    if (message.cursor !== undefined && message.cursor !== null) this.cursor = message.cursor;
    if (message.type === "session_ready") this.sessionId = message.session_id;
    if (message.type === "pong") this.handlers.rtt(performance.now() - this.pingSentAt);
    if (message.type === "error" && ["unknown_session", "session_ended"].includes(message.code)) {
      this.sessionId = null;  // the old session is gone: start a fresh one
      this.cursor = null;
      this.select(this.avatarId);
      return;
    }
    this.handlers.message(message);
  }

  select(avatarId) {
    this.avatarId = avatarId;
    if (avatarId) this.send({ type: "avatar_selection", avatar_id: avatarId });
  }

  ping() {
    this.pingSentAt = performance.now();
    this.send({ type: "ping" });
  }

  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }
}

/** The avatar's idle clip (``session_ready``'s idle_clip_url), looped muted over the speech video while nothing
 * is speaking. Fetched with the page's token into a blob, so the request carries the Authorization header. A
 * lip-sync worker renders the clip; until it has, the gateway answers 503 ``idle_clip_pending`` with Retry-After:
 * the still (the speech video's poster) shows meanwhile and the clip is asked for again after that wait. If it
 * cannot be loaded at all the element stays hidden and the still stays. */
const IDLE_CLIP_MAX_TRIES = 60;     // about two minutes of a pending clip, then the still for good
const IDLE_CLIP_MAX_WAIT_S = 10;    // a longer Retry-After is shortened to this
class IdleLoop {
  constructor(video, token) {
    this.video = video;
    this.token = token;          // () → the access token, read when the clip is fetched
    this.avatarId = null;
    this.objectUrl = null;
    this.state = "none";         // none → loading (⇄ pending) → ready | failed
    this.generation = 0;         // a clip that arrives after another avatar was selected is dropped
    this.retryTimer = null;
    this.tries = 0;              // fetches of this avatar's clip so far
    video.addEventListener("error", () => this.fail());
  }

  /** Fetch and start looping ``url`` for ``avatarId``; a resumed session of the same avatar keeps its clip. */
  async load(avatarId, url) {
    if (avatarId === this.avatarId && ["ready", "loading", "pending"].includes(this.state)) return;
    this.clear();
    if (!url) return;
    this.avatarId = avatarId;
    this.tries = 0;
    await this.fetchClip(url, this.generation);
  }

  async fetchClip(url, generation) {
    this.state = "loading";
    this.tries += 1;
    try {
      const token = this.token();
      const response = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
      if (generation !== this.generation) return;
      if (response.status === 503 && this.tries < IDLE_CLIP_MAX_TRIES) {
        const body = await response.json().catch(() => ({}));
        if (generation !== this.generation) return;
        if (body.code === "idle_clip_pending") {
          this.state = "pending";
          const wait = Math.min(IDLE_CLIP_MAX_WAIT_S, Math.max(0.5, Number(response.headers.get("Retry-After")) || 2));
          this.retryTimer = setTimeout(() => this.fetchClip(url, generation), wait * 1000);
          return;
        }
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const blob = await response.blob();
      if (generation !== this.generation) return;
      this.objectUrl = URL.createObjectURL(blob);
      this.video.src = this.objectUrl;
      await new Promise((resolve, reject) => {
        this.video.addEventListener("loadeddata", resolve, { once: true });
        this.video.addEventListener("error", reject, { once: true });
      });
      if (generation === this.generation) this.state = "ready";
    } catch (error) {
      if (generation === this.generation) this.fail();
    }
  }

  get ready() { return this.state === "ready"; }

  /** Show and play the loop, or hide and pause it (paused, it costs nothing while speech plays). */
  show(visible) {
    const on = visible && this.ready;
    if (this.video.hidden === !on) return;
    this.video.hidden = !on;
    if (on) this.video.play().catch(() => {});
    else this.video.pause();
  }

  fail() {
    this.state = "failed";
    this.video.hidden = true;
  }

  clear() {
    this.generation += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.avatarId = null;
    this.state = "none";
    this.video.hidden = true;
    this.video.removeAttribute("src");
    this.video.load();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
  }
}

/** The page: requests and their history entries, the timeline, subtitles and the latency figures. */
class AvatarPlayer {
  constructor() {
    this.video = $("video");
    this.lang = new URLSearchParams(location.search).get("ui")
      || localStorage.getItem("player.ui") || (navigator.language.startsWith("fa") ? "fa" : "en");
    this.requests = new Map();   // request id → request
    this.awaitingAccept = [];     // sent text_inputs, in order, not yet accepted
    this.interrupted = new Set();
    this.cues = [];               // {start, end, text, request}
    this.posters = new Map();     // avatar id → data URL of its first frame, shown while idle
    this.stats = { firstChunkMs: null, playStartMs: null, marginS: null, late: 0, chunks: 0, rttMs: null };
    this.subtitlesShown = [];     // every subtitle put on screen, with the media time it appeared at
    this.confirmedInterrupts = [];  // the server's `interrupted` replies
    this.lastTime = 0;
    this.lastAdvanceAt = 0;       // when currentTime last moved: tells a halted video from a playing one
    this.errors = [];
    this.timeline = new MediaTimeline(this.video, (error) => this.fail(String(error.message || error)));
    // "webrtc" (?transport=webrtc or the toggle) plays the session over WebRTC when it connects, else MSE.
    this.transport = new URLSearchParams(location.search).get("transport")
      || localStorage.getItem("player.transport") || "mse";
    this.rtc = new RtcReceiver($("rtc-video"), (now) => this.onRtcFrame(now));
    this.rtcFailure = null;  // why the last WebRTC attempt fell back to MSE
    this.rtcEnd = 0;  // performance.now() at which the requests started over WebRTC so far end
    this.idle = new IdleLoop($("idle-video"), () => $("token").value);
    this.connection = new Connection({
      state: (state) => {
        this.showConnection(state);
        if (state === "closed") this.dropUnaccepted();
      },
      message: (message) => this.onMessage(message),
      rtt: (ms) => { this.stats.rttMs = ms; this.render(); },
    });
  }

  async start() {
    this.applyLanguage();
    $("ui-language").addEventListener("click", () => {
      this.lang = this.lang === "fa" ? "en" : "fa";
      localStorage.setItem("player.ui", this.lang);
      this.applyLanguage();
    });
    $("send").addEventListener("click", () => this.say());
    $("interrupt").addEventListener("click", () => this.interrupt());
    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this.say();
    });
    $("avatar").addEventListener("change", () => this.selectAvatar($("avatar").value));
    $("webrtc").checked = this.transport === "webrtc";
    $("webrtc").addEventListener("change", () => this.chooseTransport($("webrtc").checked ? "webrtc" : "mse"));
    const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("player.token") || "";
    $("token").value = token;
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();  // Enter in the token box applies it (the change event), never reloads the page
      $("token").dispatchEvent(new Event("change"));
    });
    $("token").addEventListener("change", () => {
      localStorage.setItem("player.token", $("token").value);
      this.connection.sessionId = null;
      this.connection.reopen($("token").value);
      this.loadAvatars();
    });
    this.video.addEventListener("loadeddata", () => this.capturePoster());
    await this.loadAvatars();
    this.connection.open(token);
    requestAnimationFrame(() => this.tick());
  }

  t(key) { return TEXT[this.lang][key] ?? TEXT.en[key] ?? key; }

  applyLanguage() {
    document.documentElement.lang = this.lang;
    document.documentElement.dir = this.lang === "fa" ? "rtl" : "ltr";
    for (const element of document.querySelectorAll("[data-i18n]")) {
      if (element.id === "connection" || element.id === "activity") continue;
      element.textContent = this.t(element.dataset.i18n);
    }
    $("ui-language").textContent = this.lang === "fa" ? TEXT.en.switchTo : TEXT.fa.switchTo;
    $("ui-language").lang = this.lang === "fa" ? "en" : "fa";
    this.showConnection($("connection").dataset.state);
    this.showActivity();
    for (const request of this.requests.values()) this.renderRequest(request);
    this.render();
  }

  async loadAvatars() {
    const wanted = new URLSearchParams(location.search).get("avatar");
    let avatars = [];
    try {
      const token = $("token").value;
      const response = await fetch("/avatar/list", { headers: token ? { Authorization: `Bearer ${token}` } : {} });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      const list = Array.isArray(body) ? body : (body.avatars || body.items || []);
      avatars = list.map((a) => ({ id: a.avatar_id || a.id, name: a.name || a.avatar_id || a.id }))
        .filter((a) => a.id);
    } catch (error) {
      this.status(this.t("avatarsFallback"));
    }
    if (!avatars.length) avatars = [{ id: "sample", name: "sample" }];
    const select = $("avatar");
    const names = avatars.map((a) => a.name);
    select.replaceChildren(...avatars.map((a) => {
      // The name alone reads best; the id is added only where two avatars share a name.
      const unique = names.indexOf(a.name) === names.lastIndexOf(a.name);
      const option = new Option(unique ? a.name : `${a.name} (${a.id})`, a.id);
      option.title = a.id;
      return option;
    }));
    const ids = avatars.map((a) => a.id);
    select.value = ids.includes(wanted) ? wanted : ids.includes("sample") ? "sample" : ids[0];
    this.connection.avatarId = select.value;
    this.connection.select(select.value);
  }

  selectAvatar(avatarId) {
    // A new avatar may differ in size and codec profile: give it a fresh timeline, its own still as poster.
    this.interrupt();
    this.timeline.reset();
    this.cues = [];
    this.video.poster = this.posters.get(avatarId) || "";
    $("placeholder").hidden = this.posters.has(avatarId);
    this.idle.clear();  // the new avatar's clip comes with its session_ready
    this.connection.select(avatarId);
  }

  say() {
    const text = $("text").value.trim();
    if (!text) {
      this.status(this.t("noText"), true);
      return;
    }
    const language = $("language").value;
    const message = { type: "text_input", text };
    if (language) message.language = language;
    this.video.play().catch(() => {});  // inside the click: lets the browser play sound once media arrives
    if (this.rtc.live) this.rtc.video.play().catch(() => {});
    if (!this.connection.send(message)) {
      this.status(this.t("closed"), true);
      return;
    }
    const request = { id: null, text, sentAt: performance.now(), firstChunkAt: null, playStartAt: null,
      base: null, chunks: 0, seqs: new Set(), state: "queued", end: null, minMarginS: null, element: null };
    this.awaitingAccept.push(request);
    this.renderRequest(request);
    this.status(this.t("sending"));
  }

  dropUnaccepted() {
    // Texts the server never acknowledged are lost with the connection: say so instead of waiting for ever.
    for (const request of this.awaitingAccept.splice(0)) {
      request.state = "failed";
      request.error = this.t("closed");
      this.renderRequest(request);
    }
    this.showActivity();
  }

  interrupt() {
    const active = [...this.requests.values()].filter((r) => r.state === "queued" || r.state === "playing");
    if (!active.length && !this.awaitingAccept.length) return;
    this.rtc.interrupt();  // first: the peer's flush is what stops the WebRTC media; the WebSocket's stops the pipeline
    this.connection.send({ type: "interrupt" });
    for (const request of [...active, ...this.awaitingAccept]) {
      if (request.id) this.interrupted.add(request.id);
      request.state = "interrupted";
      this.renderRequest(request);
    }
    this.timeline.clearAhead();
    this.rtcEnd = 0;  // the gateway flushes the WebRTC tracks: the next request starts with its first frame
    const now = this.video.currentTime;
    this.cues = this.cues.filter((cue) => cue.start <= now && cue.request.state !== "interrupted");
    $("subtitle").replaceChildren();
    this.showActivity();
  }

  onMessage(message) {
    switch (message.type) {
      case "session_ready":
        if (message.resumed) this.status(`session ${message.session_id.slice(0, 8)} resumed`);
        this.idle.load(message.avatar_id, message.idle_clip_url);
        if (this.transport === "webrtc" && this.rtc.sessionId !== message.session_id) this.startRtc();
        break;
      case "request_accepted": {
        const request = this.awaitingAccept.shift();
        if (!request) break;
        request.id = message.request_id;
        if (request.state === "interrupted") {
          this.interrupted.add(request.id);
          this.connection.send({ type: "interrupt", request_id: request.id });
        }
        this.requests.set(request.id, request);
        this.renderRequest(request);
        this.status("");
        break;
      }
      case "video_chunk":
        this.onChunk(message);
        break;
      case "interrupted":
        this.confirmedInterrupts.push(message);
        for (const id of message.request_ids || [message.request_id]) if (id) this.interrupted.add(id);
        break;
      case "error":
        this.onError(message);
        break;
      default:
        break;
    }
  }

  onChunk(chunk) {
    if (this.interrupted.has(chunk.request_id)) return;
    const request = this.requests.get(chunk.request_id) || this.adoptUnknown(chunk.request_id);
    if (request.seqs.has(chunk.seq)) return;  // delivery is at-least-once: a replayed chunk is not played twice
    request.seqs.add(chunk.seq);
    const arrivedAt = performance.now();
    const first = request.firstChunkAt === null;
    if (first) {
      request.firstChunkAt = arrivedAt;
      this.stats.firstChunkMs = arrivedAt - request.sentAt;
    }
    if (chunk.seq === 0 || request.state === "queued") request.state = "playing";
    request.chunks += 1;
    this.stats.chunks += 1;
    if (this.rtc.live) {
      request.overRtc = true;  // its media arrives on the WebRTC tracks; the chunk gives cues and the end
      this.placeRtc(request, chunk);
    } else {
      if (first) {
        this.timeline.startRequest(request, chunk.mime);
        this.video.play().catch(() => {});
      }
      this.timeline.append(base64ToBytes(chunk.data), () => this.place(request, chunk));
    }
    this.renderRequest(request);
    this.showActivity();
  }

  adoptUnknown(requestId) {
    // A chunk of a request this page did not send (e.g. replayed after a resume): play it all the same.
    const request = { id: requestId, text: "", sentAt: performance.now(), firstChunkAt: null, playStartAt: null,
      base: null, chunks: 0, seqs: new Set(), state: "queued", end: null, minMarginS: null, element: null };
    this.requests.set(requestId, request);
    return request;
  }

  /** The chunk is about to be appended at base + pts: record its margin and its subtitle cue. */
  place(request, chunk) {
    const start = request.base + chunk.pts_ms / 1000;
    const margin = start - this.video.currentTime;
    if (chunk.seq > 0) {
      this.stats.marginS = margin;
      request.minMarginS = request.minMarginS === null ? margin : Math.min(request.minMarginS, margin);
      if (margin < 0) this.stats.late += 1;
    }
    if (chunk.text) {
      const open = this.cues.find((cue) => cue.request === request && cue.end === null);
      if (open) open.end = start;
      this.cues.push({ start, end: null, text: chunk.text, request });
    }
    if (chunk.is_last) {
      request.end = start + chunk.duration_ms / 1000;
      for (const cue of this.cues) if (cue.request === request && cue.end === null) cue.end = request.end;
    }
  }

  /** Over WebRTC a request plays on the wall clock from its first frame shown: cues are kept relative to it. */
  placeRtc(request, chunk) {
    const start = chunk.pts_ms / 1000;
    if (chunk.text) {
      const open = this.cues.find((cue) => cue.request === request && cue.end === null);
      if (open) open.end = start;
      this.cues.push({ start, end: null, text: chunk.text, request, relative: true });
    }
    if (chunk.is_last) {
      request.end = start + chunk.duration_ms / 1000;
      for (const cue of this.cues) if (cue.request === request && cue.end === null) cue.end = request.end;
    }
  }

  /** A WebRTC frame was shown: the first request waiting for its first frame starts now. */
  onRtcFrame(now) {
    const waiting = [...this.requests.values()].find((r) => r.overRtc && r.state === "playing"
      && r.playStartAt === null);
    if (!waiting || now < waiting.firstChunkAt || now < this.rtcEnd) return;
    waiting.playStartAt = now;
    waiting.base = now / 1000;
    this.stats.playStartMs = now - waiting.sentAt;
    this.rtc.unmute();  // muted by an interrupt: what played since was the stopped speech Chromium held
  }

  chooseTransport(transport) {
    this.transport = transport;
    localStorage.setItem("player.transport", transport);
    if (transport === "webrtc") this.startRtc();
    else this.useMse(null);
  }

  async startRtc() {
    const sessionId = this.connection.sessionId;
    if (!sessionId) return;
    try {
      await this.rtc.connect(sessionId, $("token").value);
      this.rtcFailure = null;
      this.video.pause();
      this.video.hidden = true;
      this.rtc.video.hidden = false;
    } catch (error) {
      this.useMse(String(error.message || error));
    }
  }

  useMse(failure) {
    this.rtc.close();
    this.rtcFailure = failure;
    this.rtc.video.hidden = true;
    this.video.hidden = false;
    if (failure) this.status(`${this.t("rtcFallback")} ${failure}`, true);
  }

  onError(message) {
    this.errors.push(message);
    let request = message.request_id ? this.requests.get(message.request_id) : null;
    if (!request && !message.request_id && TEXT_INPUT_ERRORS.has(message.code)) request = this.awaitingAccept.shift();
    if (message.code === "interrupted") return;  // the pipeline confirming a barge-in we already handled
    if (request) {
      request.state = "failed";
      request.error = message.message;
      this.renderRequest(request);
    }
    this.fail(`${message.code}: ${message.message}`);
  }

  fail(text) {
    this.status(text, true);
    this.showActivity();
  }

  /** Every animation frame: subtitles, playback-start latency, finished requests, live figures. */
  tick() {
    const now = this.video.currentTime;
    if (now !== this.lastTime) {
      this.lastTime = now;
      this.lastAdvanceAt = performance.now();
    }
    const wall = performance.now();
    for (const request of this.requests.values()) {
      if (request.overRtc) {
        if (request.state !== "playing" || request.playStartAt === null) continue;
        if (request.end !== null) this.rtcEnd = Math.max(this.rtcEnd, request.playStartAt + request.end * 1000);
        if (request.end !== null && wall >= request.playStartAt + request.end * 1000) {
          request.state = "done";
          this.renderRequest(request);
        }
        continue;
      }
      if (request.state !== "playing" || request.base === null) continue;
      if (request.playStartAt === null && now > request.base + 0.001 && !this.video.paused) {
        request.playStartAt = performance.now();
        this.stats.playStartMs = request.playStartAt - request.sentAt;
      }
      // Done once playback reached its end, or stopped just short of it: playback halts where the shorter
      // track (usually the audio, in whole AAC frames) runs out, up to a few frames before the video ends.
      const reachable = this.timeline.sourceBuffer ? lastBufferedEnd(this.timeline.sourceBuffer) : 0;
      const allBuffered = request.end !== null && reachable >= request.end - 0.1;
      const halted = request.playStartAt !== null && performance.now() - this.lastAdvanceAt > 150;
      if (request.end !== null && (now >= request.end - 0.01 || (allBuffered && halted && now >= request.end - 0.25))) {
        request.state = "done";
        this.renderRequest(request);
      }
    }
    this.showSubtitle(now);
    this.showActivity();
    this.showIdle();
    this.render();
    requestAnimationFrame(() => this.tick());
  }

  showSubtitle(now) {
    const at = (cue) => {
      if (!cue.relative) return now;  // MSE cues sit on the media timeline
      const start = cue.request.playStartAt;  // WebRTC cues: seconds since the request's first frame
      return start === null ? -Infinity : (performance.now() - start) / 1000;
    };
    const cue = this.cues.find((c) => c.start <= at(c) && (c.end === null || at(c) < c.end)
      && c.request.state !== "interrupted");
    const box = $("subtitle");
    const shown = box.firstChild ? box.firstChild.textContent : "";
    const wanted = cue ? cue.text : "";
    if (shown === wanted) return;
    if (!wanted) {
      box.replaceChildren();
      return;
    }
    const span = document.createElement("span");
    span.textContent = wanted;
    box.replaceChildren(span);
    this.subtitlesShown.push({ text: wanted, at: now });
  }

  capturePoster() {
    // The first decoded frame becomes the avatar's still, shown when its timeline is reset.
    const avatarId = this.connection.avatarId;
    if (!avatarId || this.posters.has(avatarId) || !this.video.videoWidth) return;
    const canvas = document.createElement("canvas");
    canvas.width = this.video.videoWidth;
    canvas.height = this.video.videoHeight;
    canvas.getContext("2d").drawImage(this.video, 0, 0);
    this.posters.set(avatarId, canvas.toDataURL("image/jpeg", 0.85));
    this.video.poster = this.posters.get(avatarId);
    $("placeholder").hidden = true;
  }

  speaking() {
    return [...this.requests.values()].some((r) => r.state === "playing" || r.state === "queued");
  }

  /** The idle clip covers the speech video except while speech is on screen: a request still waiting for its
   * first frame idles on, and the clip returns as soon as the last one is done or stopped. */
  showIdle() {
    const speechOnScreen = [...this.requests.values()].some((r) => r.state === "playing" && r.playStartAt !== null);
    this.idle.show(!speechOnScreen);
    if (this.idle.ready) $("placeholder").hidden = true;
  }

  showActivity() {
    const badge = $("activity");
    const state = this.speaking() ? "speaking" : "idle";
    badge.dataset.state = state;
    badge.textContent = this.t(state);
    $("interrupt").disabled = !this.speaking() && !this.awaitingAccept.length;
    if (state === "speaking") $("placeholder").hidden = true;
  }

  showConnection(state) {
    const badge = $("connection");
    badge.dataset.state = state;
    badge.textContent = this.t(state);
  }

  status(text, isError = false) {
    const line = $("status");
    line.textContent = text;
    line.classList.toggle("error", isError);
  }

  number(value, digits = 0) {
    // Persian digits in the Persian UI; formatters are cached because render() runs every frame.
    const key = `${this.lang}:${digits}`;
    if (!this.formats) this.formats = new Map();
    if (!this.formats.has(key)) {
      this.formats.set(key, new Intl.NumberFormat(this.lang === "fa" ? "fa-IR" : "en-US",
        { minimumFractionDigits: digits, maximumFractionDigits: digits }));
    }
    return this.formats.get(key).format(value);
  }

  /** A number with its unit, isolated left-to-right so "147 ms" does not turn into "ms 147" in Persian. */
  quantity(value, unit, digits = 0, signed = false) {
    const sign = signed ? (value >= 0 ? "+" : "−") : "";
    return `\u2066${sign}${this.number(signed ? Math.abs(value) : value, digits)} ${unit}\u2069`;
  }

  render() {
    const s = this.stats;
    const quality = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    const frames = this.rtc.live ? this.rtc.frames : (quality ? quality.totalVideoFrames : 0);
    $("stat-first-chunk").textContent = s.firstChunkMs === null ? "–" : this.quantity(s.firstChunkMs, "ms");
    $("stat-play-start").textContent = s.playStartMs === null ? "–" : this.quantity(s.playStartMs, "ms");
    $("stat-margin").textContent = s.marginS === null ? "–"
      : this.quantity(s.marginS, "s", 2, true);
    $("stat-margin").classList.toggle("late", s.marginS !== null && s.marginS < 0);
    $("stat-late").textContent = this.number(s.late);
    $("stat-chunks").textContent = this.number(s.chunks);
    $("stat-frames").textContent = this.number(frames);
    $("stat-rtt").textContent = s.rttMs === null ? "–" : this.quantity(s.rttMs, "ms");
  }

  renderRequest(request) {
    if (!request.element) {
      request.element = document.createElement("li");
      $("history").prepend(request.element);
    }
    const item = request.element;
    item.dataset.state = request.state;
    if (request.id) item.dataset.requestId = request.id;
    const said = document.createElement("span");
    said.className = "said";
    said.dir = "auto";
    said.textContent = request.text || `(${request.id ? request.id.slice(0, 8) : "…"})`;
    const meta = document.createElement("span");
    meta.className = "meta";
    const parts = [this.t(request.state)];
    if (request.firstChunkAt !== null) {
      parts.push(`${this.t("firstChunk")} ${this.quantity(request.firstChunkAt - request.sentAt, "ms")}`);
    }
    if (request.minMarginS !== null) {
      parts.push(`${this.t("margin")} ≥ ${this.quantity(request.minMarginS, "s", 2, true)}`);
    }
    if (request.error) parts.push(request.error);
    meta.textContent = parts.join(" · ");
    item.replaceChildren(said, meta);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  window.avatarPlayer = new AvatarPlayer();
  window.avatarPlayer.start();
});
