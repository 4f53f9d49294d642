// The webcam page: each camera frame goes to POST /predict as a JPEG (one request in flight at a time, so a
// slow server lowers the frame rate instead of queueing frames), and the answer is drawn on that same frame
// in the colours infer.py draws with. A dropped or chosen photo is sent as it is.
"use strict";

const view = document.getElementById("view");
const ctx = view.getContext("2d");
const video = document.getElementById("video");
const statusLine = document.getElementById("status");
const fpsLine = document.getElementById("fps");
const faceList = document.getElementById("faces");
const cameraButton = document.getElementById("camera");
const grab = document.createElement("canvas"); // the frame being analysed, kept to draw the answer on
const MAX_SIDE = 640; // frames are sent at most this wide: enough for faces, and a small upload
const UNCERTAIN = "#808080";

let info = null;
let mode = "camera"; // or "photo"
let fps = null;
let last = performance.now();
window.fer = { frames: 0, last: null, error: null }; // what the browser test reads

function say(text) {
  statusLine.textContent = text;
}

function caption(face) {
  // As infer.py's Annotator.caption: below uncertain_below the label reads "uncertain", in grey.
  if (face.score < info.uncertain_below) return ["uncertain", UNCERTAIN];
  return [`${face.label} ${Math.round(Math.min(Math.max(face.score, 0), 1) * 100)}%`, info.colours[face.label]];
}

function inkFor(hex) {
  const n = parseInt(hex.slice(1), 16);
  return ((n >> 16) & 255) + ((n >> 8) & 255) + (n & 255) > 380 ? "#000" : "#fff"; // dark text on light bands
}

function draw(source, result) {
  view.width = source.width;
  view.height = source.height;
  ctx.drawImage(source, 0, 0);
  const k = source.width / result.width; // the server's pixels -> the canvas's
  const line = Math.max(2, Math.round(Math.min(view.width, view.height) / 240));
  ctx.font = `${Math.max(14, Math.round(view.height / 28))}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  faceList.replaceChildren();
  for (const face of result.faces) {
    const [x, y, w, h] = face.box.map((v) => v * k);
    const [text, colour] = caption(face);
    ctx.lineWidth = line;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, w, h);
    const tw = ctx.measureText(text).width + 8;
    const th = parseInt(ctx.font, 10) + 6;
    const ty = y - th >= 0 ? y - th : y;
    ctx.fillStyle = colour;
    ctx.fillRect(x - line / 2, ty, tw, th);
    ctx.fillStyle = inkFor(colour);
    ctx.fillText(text, x + 4 - line / 2, ty + 3);
    const item = document.createElement("li");
    item.dataset.label = face.label;
    item.innerHTML = `<span class="swatch" style="background:${colour}"></span>`;
    item.append(`${text} at x=${face.box[0]} y=${face.box[1]} w=${face.box[2]} h=${face.box[3]}`);
    faceList.append(item);
  }
  if (!result.faces.length) faceList.innerHTML = "<li>no face found</li>";
}

async function predict(body, type) {
  const started = performance.now();
  const response = await fetch("/predict", { method: "POST", headers: { "Content-Type": type }, body });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  const timing = /dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
  const trip = performance.now() - started;
  say(`round trip ${trip.toFixed(0)} ms, analysis ${timing ? Number(timing[1]).toFixed(0) : "?"} ms`);
  window.fer.frames += 1;
  window.fer.last = answer;
  return answer;
}

function toJpeg(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

async function cameraLoop() {
  while (mode === "camera") {
    if (video.readyState < 2) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    try {
      const result = await predict(await toJpeg(grab), "image/jpeg");
      if (mode !== "camera") break; // a photo arrived meanwhile: it stays on screen
      draw(grab, result);
      const now = performance.now();
      const rate = 1000 / Math.max(now - last, 1);
      fps = fps === null ? rate : 0.9 * fps + 0.1 * rate;
      last = now;
      fpsLine.textContent = `${fps.toFixed(1)} fps`;
    } catch (e) {
      window.fer.error = String(e.message || e);
      say(`error: ${window.fer.error}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

async function startCamera() {
  mode = "camera";
  cameraButton.hidden = true;
  if (!video.srcObject) {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      say(`no camera (${e.name}): drop or choose a photo instead`);
      return;
    }
  }
  await video.play();
  last = performance.now();
  cameraLoop();
}

async function showPhoto(file) {
  mode = "photo";
  cameraButton.hidden = !video.srcObject;
  fpsLine.textContent = "";
  try {
    const bitmap = await createImageBitmap(file); // turned by its EXIF orientation, as the server turns it
    draw(bitmap, await predict(file, file.type || "application/octet-stream"));
  } catch (e) {
    window.fer.error = String(e.message || e);
    say(`error: ${window.fer.error}`);
  }
}

document.getElementById("photo").addEventListener("change", (e) => e.target.files[0] && showPhoto(e.target.files[0]));
cameraButton.addEventListener("click", startCamera);
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("dragging");
});
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("dragging");
  if (e.dataTransfer.files[0]) showPhoto(e.dataTransfer.files[0]);
});

(async () => {
  info = await (await fetch("/info")).json();
  const accuracy = info.validation_accuracy ? `, ${(info.validation_accuracy * 100).toFixed(1)}% on PublicTest` : "";
  document.getElementById("model").textContent = `${info.model} (${info.backend}${accuracy}), detector ${info.detector}`;
  say("opening the camera…");
  startCamera();
})();
