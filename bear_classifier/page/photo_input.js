// The page's photo input (an anywidget ES module): an upload button for several photos, drop and
// paste anywhere on the page, and the device's camera. It owns its <input type=file>; nothing of
// ipywidgets or the browser is patched.
//
// Each photo goes to the kernel as one custom message, its bytes as a binary buffer:
// - over the size limit: never sent; the kernel gets the name and size and says why;
// - big (in bytes, or in pixels: a 148 KB PNG can hold 8000×6000), and decodable by the browser: decoded here (EXIF orientation applied), scaled so its
//   short side is `shrink_side`, and sent as PPM pixels (a header, then RGB bytes). A 4 MB phone
//   photo crosses the websocket as ~0.3 MB. The canvas's JPEG encoder is not used: it waits for
//   the page to be idle, which a Voila page seldom is;
// - anything else (small, or HEIC that Chromium can't decode, or a damaged file): sent as is, for
//   the kernel to decode or explain.

const CAMERA_ERRORS = {
  insecure: "The camera needs a secure page (https or localhost), and this one is plain http. Upload a photo instead.",
  NotAllowedError: "Camera permission was denied. Allow the camera for this site in your browser's settings, or upload a photo instead.",
  NotFoundError: "No camera was found on this device. Upload a photo instead.",
  NotReadableError: "The camera is busy in another app. Close that app, or upload a photo instead.",
};

let active = null; // the view that receives dropped and pasted photos: the last one rendered
const LOST = "The connection to the server was lost. Please reload the page to keep going.";

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

async function jpegSize(blob) {
  // Width and height from a JPEG's frame header (baseline, extended or progressive), or null.
  const bytes = new DataView(await blob.slice(0, 1 << 18).arrayBuffer());
  if (bytes.byteLength < 4 || bytes.getUint16(0) !== 0xffd8) { return null; }
  for (let i = 2; i + 9 < bytes.byteLength; i += 2 + bytes.getUint16(i + 2)) {
    if (bytes.getUint8(i) !== 0xff) { return null; }
    const marker = bytes.getUint8(i + 1);
    if (marker === 0xc0 || marker === 0xc1 || marker === 0xc2) {
      return { height: bytes.getUint16(i + 5), width: bytes.getUint16(i + 7) };
    }
  }
  return null;
}

async function pixelCount(blob) {
  // Width × height from the file's header (JPEG, PNG, GIF, WebP), without decoding it; null when unknown.
  const head = new DataView(await blob.slice(0, 32).arrayBuffer());
  const ascii = (at, n) => String.fromCharCode(...new Uint8Array(head.buffer, at, n));
  if (head.byteLength >= 24 && head.getUint32(0) === 0x89504e47) { return head.getUint32(16) * head.getUint32(20); }
  if (head.byteLength >= 10 && ascii(0, 4) === "GIF8") { return head.getUint16(6, true) * head.getUint16(8, true); }
  if (head.byteLength >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 7) === "WEBPVP8") {
    const kind = ascii(15, 1);
    if (kind === "X") { return ((head.getUint32(24, true) & 0xffffff) + 1) * ((head.getUint32(27, true) & 0xffffff) + 1); }
    if (kind === " ") { return (head.getUint16(26, true) & 0x3fff) * (head.getUint16(28, true) & 0x3fff); }
    if (kind === "L") { const bits = head.getUint32(21, true); return ((bits & 0x3fff) + 1) * (((bits >> 14) & 0x3fff) + 1); }
  }
  const size = await jpegSize(blob);
  return size && size.width * size.height;
}

async function decode(blob, side) {
  // A JPEG decodes at 1/2, 1/4 or 1/8 scale with WebCodecs (about 90 ms for 12 MP instead of a full
  // decode); other formats, and browsers without ImageDecoder, through createImageBitmap.
  const size = window.ImageDecoder && await jpegSize(blob);
  const scale = size && [8, 4, 2].find((s) => Math.min(size.width, size.height) / s >= side);
  if (scale) {
    const decoder = new ImageDecoder({ data: blob.stream(), type: "image/jpeg",
      desiredWidth: Math.ceil(size.width / scale), desiredHeight: Math.ceil(size.height / scale) });
    try {
      const frame = (await decoder.decode()).image; // complete frames only: a truncated file throws
      return { image: frame, width: frame.displayWidth, height: frame.displayHeight, close: () => frame.close() };
    } finally {
      decoder.close();
    }
  }
  const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
  return { image: bitmap, width: bitmap.width, height: bitmap.height, close: () => bitmap.close() };
}

async function shrink(blob, side, always) {
  const picture = await decode(blob, side); // EXIF orientation applied
  const scale = Math.min(1, side / Math.min(picture.width, picture.height));
  const width = Math.round(picture.width * scale), height = Math.round(picture.height * scale);
  if (!always && width * height * 3 >= blob.size) { picture.close(); return null; } // the file is smaller: send it
  const context = new OffscreenCanvas(width, height).getContext("2d");
  context.fillStyle = "#fff"; // transparent areas on white, as viewers show them and the kernel blends them
  context.fillRect(0, 0, width, height);
  context.drawImage(picture.image, 0, 0, width, height);
  picture.close();
  return ppm(context, width, height);
}

function ppm(context, width, height) {
  const rgba = context.getImageData(0, 0, width, height).data;
  const header = new TextEncoder().encode(`P6\n${width} ${height}\n255\n`);
  const out = new Uint8Array(header.length + width * height * 3);
  out.set(header);
  for (let i = 0, j = header.length; i < rgba.length; i += 4, j += 3) {
    out[j] = rgba[i]; out[j + 1] = rgba[i + 1]; out[j + 2] = rgba[i + 2];
  }
  return out.buffer;
}

async function prepare(file, model) {
  const meta = { kind: "photo", name: file.name || "pasted image", size: file.size, type: file.type };
  if (file.size > model.get("max_bytes")) { return [{ ...meta, kind: "too_large" }, []]; }
  const huge = await pixelCount(file).catch(() => null) > model.get("shrink_pixels"); // widget.py says why
  if (huge || file.size >= model.get("shrink_from")) {
    try {
      const patience = new Promise((_, reject) => setTimeout(reject, 5000)); // a decoder that hangs: send as is
      const pixels = await Promise.race([shrink(file, model.get("shrink_side"), huge), patience]);
      if (pixels) { return [{ ...meta, shrunk: true }, [pixels]]; }
    } catch (e) { /* not decodable here: the kernel decodes it or says what is wrong */ }
  }
  return [meta, [await file.arrayBuffer()]];
}

async function sendAll(files, model, id) {
  // `id` names the batch: the kernel says "received" with it at once, and drops a batch it has had
  // before (one sent again while the first was still on its way).
  const limit = model.get("max_files");
  model.send({ kind: "batch", id, count: Math.min(files.length, limit), total: files.length });
  window.bearScrollToNext = true; // card.js: the first card to come is scrolled into view if it lands below the fold
  for (const file of files.slice(0, limit)) {
    const [meta, buffers] = await prepare(file, model);
    model.send({ ...meta, batch: id }, undefined, buffers);
  }
}

// Every batch the page sends is acknowledged by the kernel the moment it arrives. One that isn't within
// ACK_MS (a socket that dropped it, a kernel that was replaced) is never lost in silence: the page says
// so and keeps the photos, to send again with one click.
const ACK_MS = 5000;
const NOT_RECEIVED = "The server has not received your photos yet.";

function deliveries(model, say, resendButton) {
  const unconfirmed = new Map(); // batch id -> { again: sends it, timer }
  let count = 0;
  const overdue = () => {
    resendButton.hidden = false;
    say(`${NOT_RECEIVED} Press “Send again”, or reload the page if it keeps happening.`);
  };
  model.on("msg:custom", (message) => {
    if (message?.kind !== "received" || !unconfirmed.has(message.id)) { return; }
    clearTimeout(unconfirmed.get(message.id).timer);
    unconfirmed.delete(message.id);
    if (!unconfirmed.size && !resendButton.hidden) { resendButton.hidden = true; say(""); }
  });
  const track = (id, again) => {
    unconfirmed.set(id, { again, timer: setTimeout(overdue, ACK_MS) });
    again();
  };
  const newId = () => `${Date.now().toString(36)}-${++count}`;
  resendButton.addEventListener("click", () => {
    resendButton.hidden = true;
    say("Sending again…");
    for (const [id, { again, timer }] of [...unconfirmed]) { clearTimeout(timer); track(id, again); }
  });
  return {
    photos(files) { const id = newId(); track(id, () => sendAll(files, model, id)); },
    example(name) { const id = newId(); track(id, () => model.send({ kind: "example", name, id })); },
  };
}

function installPageListeners() {
  if (window.bearPageListeners) { return; }
  window.bearPageListeners = true;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    if (hasFiles(event)) { depth += 1; document.body.classList.add("bear-dropping"); }
  });
  document.addEventListener("dragleave", (event) => {
    if (hasFiles(event) && --depth <= 0) { depth = 0; document.body.classList.remove("bear-dropping"); }
  });
  document.addEventListener("dragover", (event) => { if (hasFiles(event)) { event.preventDefault(); } });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    depth = 0;
    document.body.classList.remove("bear-dropping");
    if (active) { active(event.dataTransfer.files); }
  });
  document.addEventListener("paste", (event) => {
    const files = Array.from(event.clipboardData?.files || []);
    if (files.length && active) { event.preventDefault(); active(files); }
  });
}

function cameraPanel(model, say, sendPhotos) {
  const video = element("video", { autoplay: true, muted: true, playsInline: true, className: "bear-video" });
  const choose = element("select", { className: "bear-camera-choice", title: "Camera" });
  const capture = element("button", { type: "button", className: "bear-button bear-primary", textContent: "Capture" });
  const close = element("button", { type: "button", className: "bear-button", textContent: "Close camera" });
  const panel = element("div", { className: "bear-camera", hidden: true }, video,
    element("div", { className: "bear-camera-controls" }, choose, capture, close));
  let stream = null;

  function stop() {
    stream?.getTracks().forEach((track) => track.stop());
    stream = null;
    panel.hidden = true;
  }

  async function start(deviceId) {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) { say(CAMERA_ERRORS.insecure); return; }
    stream?.getTracks().forEach((track) => track.stop());
    try {
      // The rear camera first: on a phone, the photo of a bear is taken facing away from you.
      const video_ = deviceId ? { deviceId: { exact: deviceId } } : { facingMode: { ideal: "environment" } };
      stream = await navigator.mediaDevices.getUserMedia({ video: video_, audio: false });
    } catch (e) {
      stop();
      say(CAMERA_ERRORS[e.name] || `The camera could not be started (${e.name}). Upload a photo instead.`);
      return;
    }
    video.srcObject = stream;
    panel.hidden = false;
    const current = stream.getVideoTracks()[0]?.getSettings().deviceId;
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
    const rearFirst = cameras.sort((a, b) => /back|rear|environment/i.test(b.label) - /back|rear|environment/i.test(a.label));
    choose.replaceChildren(...rearFirst.map((d, i) => element("option", {
      value: d.deviceId, textContent: d.label || `Camera ${i + 1}`, selected: d.deviceId === current })));
    choose.hidden = cameras.length < 2;
    say("Point the camera at a bear, then press Capture.");
  }

  choose.addEventListener("change", () => start(choose.value));
  close.addEventListener("click", () => { stop(); say(""); });
  capture.addEventListener("click", async () => {
    if (!video.videoWidth) { say("The camera has not started yet: wait a moment, then press Capture."); return; }
    const scale = Math.min(1, model.get("shrink_side") / Math.min(video.videoWidth, video.videoHeight));
    const width = Math.round(video.videoWidth * scale), height = Math.round(video.videoHeight * scale);
    const context = new OffscreenCanvas(width, height).getContext("2d");
    context.drawImage(video, 0, 0, width, height);
    const pixels = ppm(context, width, height);
    const name = `Camera photo, ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    const file = new File([pixels], name, { type: "image/x-portable-pixmap" });
    sendPhotos([file]);
  });
  return { panel, start, stop };
}

function hintText() {
  // A touch screen has no Ctrl+V and nothing to drop from: tell it what it can do.
  if (window.matchMedia("(pointer: coarse)").matches) {
    return "Choose photos from your phone, or take one with its camera.";
  }
  const mac = /Mac|iPhone|iPad/.test(navigator.platform);
  return `…or drop photos anywhere on this page, or paste one (${mac ? "⌘V" : "Ctrl+V"}).`;
}

function examplesRow(model, sendExample) {
  // Photos from the deployer's examples/ folder: a click (or Enter) classifies one. Only its name is
  // sent; the kernel reads the file, and only the names it listed.
  const row = element("div", { className: "bear-examples-row" });
  const box = element("div", { className: "bear-examples" },
    element("p", { className: "bear-examples-label", textContent: "No photo at hand? Try one of these:" }), row);
  const show = () => {
    const examples = model.get("examples");
    row.replaceChildren(...examples.map(({ name, thumb }) => {
      const button = element("button", { type: "button", className: "bear-example", title: name },
        element("img", { src: thumb, alt: "" }));
      button.setAttribute("aria-label", `Try an example: ${name}`);
      button.addEventListener("click", () => {
        window.bearScrollToNext = true;
        sendExample(name);
      });
      return button;
    }));
    box.hidden = !examples.length;
  };
  model.on("change:examples", show);
  show();
  return box;
}

// Heartbeat. Every few seconds while the tab is shown, the page asks the server about its kernel
// (GET api/kernels/<id>, with the visitor's cookie). The kernel never sees it: only what the visitor
// does counts as its activity, so a tab left open no longer holds its kernel past the idle cull.
// 200: the kernel is there (a "connection lost" is cleared); 410: it ended here (culled after the
// idle time, given back when the visitor's address opened too many pages, or closed): say so and stop;
// anything else, or no answer, for LOST_AFTER_MS: the server behind the page is gone (a restart,
// a replica that died, where another replica answers 404), which nothing else on a Voila page says.
const PING_EVERY_MS = 4000, LOST_AFTER_MS = 20000;

function kernelUrl() {
  // The bear template puts the kernel id on <body>; Voila's own page config has it too.
  const configs = [...document.querySelectorAll("#jupyter-config-data")].map((c) => JSON.parse(c.textContent));
  const id = document.body.dataset.kernelId || configs.map((c) => c.kernelId).filter(Boolean).pop();
  const base = configs.map((c) => c.baseUrl).filter(Boolean).pop() || "/";
  return id ? `${base}api/kernels/${encodeURIComponent(id)}` : null;
}

function endedSentence(why, idleSeconds) {
  if (why === "crowded") {
    return "This session ended because more pages were opened from the same address. Reload the page to start again.";
  }
  if (why !== "idle" || !idleSeconds) { return "This session ended. Reload the page to start again."; }
  const [n, unit] = idleSeconds >= 60 ? [Math.round(idleSeconds / 60), "minute"] : [Math.round(idleSeconds), "second"];
  return `This session ended after ${n} ${unit}${n === 1 ? "" : "s"} without activity. Reload the page to start again.`;
}

function heartbeat({ lost, back, ended }) {
  const url = kernelUrl();
  if (!url) { return () => {}; }
  let lastAnswer = Date.now(), isLost = false, over = false, idleSeconds = null, timer = null;
  async function ping() {
    let reply = null;
    try {
      reply = await fetch(url, { credentials: "same-origin", cache: "no-store", signal: AbortSignal.timeout(PING_EVERY_MS) });
      if (reply.ok) { idleSeconds = (await reply.json()).cull_idle_timeout ?? idleSeconds; }
    } catch { reply = null; } // no answer: the network, or a server that is gone or frozen
    if (over) { return; }
    if (reply?.ok) {
      lastAnswer = Date.now();
      if (isLost) { isLost = false; back(); }
    } else if (reply?.status === 410) {
      over = true;
      stop();
      ended(endedSentence((await reply.json().catch(() => ({}))).message, idleSeconds));
    } else if (!isLost && Date.now() - lastAnswer > LOST_AFTER_MS) {
      isLost = true;
      lost();
    }
  }
  const resume = () => {
    if (timer !== null || over) { return; }
    lastAnswer = Date.now(); // time spent hidden is not time without an answer
    ping();
    timer = setInterval(ping, PING_EVERY_MS);
  };
  const pause = () => { clearInterval(timer); timer = null; };
  const onVisibility = () => (document.hidden ? pause() : resume());
  function stop() { pause(); document.removeEventListener("visibilitychange", onVisibility); }
  document.addEventListener("visibilitychange", onVisibility);
  if (!document.hidden) { resume(); }
  return stop;
}

function render({ model, el }) {
  installPageListeners();
  const input = element("input", { type: "file", accept: "image/*", multiple: true, hidden: true });
  const upload = element("button", { type: "button", className: "bear-button bear-primary bear-upload", textContent: "Upload photos" });
  const cameraButton = element("button", { type: "button", className: "bear-button", textContent: "Take a photo" });
  const note = element("p", { className: "bear-input-note", role: "status" });
  const resend = element("button", { type: "button", className: "bear-button", textContent: "Send again", hidden: true });
  const say = (text) => { note.textContent = text; };
  const deliver = deliveries(model, say, resend);
  const camera = cameraPanel(model, say, (files) => send(files));
  const hint = element("p", { className: "bear-input-hint", textContent: hintText() });
  el.classList.add("bear-input");
  el.append(element("div", { className: "bear-input-buttons" }, upload, cameraButton, input), hint,
    examplesRow(model, (name) => deliver.example(name)), camera.panel, note, resend);

  let blocked = null; // why photos can't be sent now: the heartbeat's sentence
  const block = (sentence) => {
    blocked = sentence;
    el.classList.toggle("bear-lost", Boolean(sentence));
    upload.disabled = cameraButton.disabled = Boolean(sentence);
    if (sentence) { camera.stop(); }
    say(sentence || "");
  };
  const stopHeartbeat = heartbeat({ lost: () => block(LOST), back: () => block(null), ended: block });

  const send = (files) => {
    files = Array.from(files);
    if (blocked) { say(blocked); return; }
    if (!files.length) { return; }
    say("");
    deliver.photos(files);
  };
  active = send;
  upload.addEventListener("click", () => { input.value = ""; input.click(); }); // empty: the same photo again still fires change
  input.addEventListener("change", () => send(input.files));
  cameraButton.addEventListener("click", () => camera.start());
  // Photos chosen with the early button of the `bear` Voila template, before this widget existed.
  window.bearEarly?.handOff(send);
  return () => { stopHeartbeat(); camera.stop(); if (active === send) { active = null; } };
}

export default { render };
