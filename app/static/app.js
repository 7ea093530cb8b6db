// The page's only script: learn the served model's classes, send an image to the API's
// /predict and show what came back.
"use strict";

const drop = document.getElementById("drop");
const fileInput = document.getElementById("file");
const errorBox = document.getElementById("error");
const statusLine = document.getElementById("status");
const result = document.getElementById("result");
const preview = document.getElementById("preview");
const modelInput = document.getElementById("model-input");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyNote = document.getElementById("key-note");
const picker = document.getElementById("model-picker");

// Relative, like every URL here: works when the app is served under a path prefix.
const PREDICT_URL = "predict?top_k=10&include_input=true";
// The shipped model's classes: a model of these gets the dataset's name as its title.
const FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
  "Sneaker", "Bag", "Ankle boot"];

// Only the answer to the latest image is shown, whatever order the answers arrive in.
let latest = 0;
let previewUrl = null;
// The API key, when the service asks for one: in this variable only, never in storage or a
// cookie, so it leaves with the tab.
let apiKey = null;
// The model picked (when the service serves several); null: the service's default model.
let model = null;

// A URL of the API for the model picked.
function forModel(url) {
  return model ? `${url}${url.includes("?") ? "&" : "?"}model=${encodeURIComponent(model)}` : url;
}

function authHeaders() {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

function listInWords(names) {
  return names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}` : names[0];
}

// Title and lead from the served model's classes: GET /classes needs no key.
async function showClasses() {
  const response = await fetch(forModel("classes")).catch(() => null);
  if (!response || !response.ok) return;
  const { classes } = await response.json();
  const fashion = classes.length === FASHION_MNIST.length && classes.every((c, i) => c === FASHION_MNIST[i]);
  const title = fashion ? "Fashion-MNIST classifier" : "Image classifier";
  document.title = title;
  document.getElementById("title").textContent = title;
  document.getElementById("lead").textContent =
    `Which of the model's ${classes.length} classes is in your picture: ${listInWords(classes)}?`;
  document.getElementById("bars-title").textContent = `All ${classes.length} classes`;
}

function askForKey(message) {
  keyForm.hidden = false;
  if (message) keyNote.textContent = message;
}

// "About the model": GET /model, which needs the key when the service has one.
async function showModel() {
  const about = document.getElementById("about-status");
  let response;
  try {
    response = await fetch(forModel("model"), { headers: authHeaders() });
  } catch (err) {
    about.textContent = "The server could not be reached.";
    return false;
  }
  if (response.status === 401) {
    about.textContent = "Enter the API key above to see the model's details.";
    askForKey(apiKey ? "That key was refused; check it and try again." : null);
    return false;
  }
  if (!response.ok) {
    about.textContent = `The server answered HTTP ${response.status}.`;
    return false;
  }
  renderModel(await response.json());
  about.hidden = true;
  return true;
}

// The model picker, shown when the service serves more than one model (GET /models, which
// needs the key when the service has one).
async function showModels() {
  const response = await fetch("models", { headers: authHeaders() }).catch(() => null);
  if (!response || !response.ok) return;
  const { default_model: fallback, models } = await response.json();
  if (models.length < 2) return;
  const chosen = model || fallback;
  picker.replaceChildren(...models.map(({ name }) => new Option(name, name, name === chosen, name === chosen)));
  document.getElementById("model-choice").hidden = false;
}

picker.addEventListener("change", () => {
  model = picker.value;
  result.hidden = true;
  showClasses();
  showModel();
});

function renderModel(info) {
  const metrics = info.metrics || {};
  const rows = [
    ["Architecture", `${info.arch}, ${info.num_parameters.toLocaleString("en")} parameters`],
    ["Classes", `${info.classes.length}: ${info.classes.join(", ")}`],
  ];
  if (typeof metrics.test_accuracy === "number") {
    const split = metrics.test_split === "validation" ? "validation" : "test";
    const count = metrics.test_count ? ` on ${metrics.test_count.toLocaleString("en")} ${split} images` : "";
    rows.push(["Accuracy", `${(100 * metrics.test_accuracy).toFixed(2)}%${count}`]);
  }
  // From a repository the version is a number, and the file's hash says which file it is.
  if (info.model_version !== info.version) rows.push(["Model", `${info.model_name}, version ${info.model_version}`]);
  rows.push(["Version", info.version]);
  if (info.created_at) rows.push(["Trained", info.created_at.slice(0, 10)]);
  rows.push(["Input", `${info.input.width}x${info.input.height} grayscale`]);
  rows.push(["Mirror averaging", info.flip_average ? "on: each image is averaged with its mirror image" : "off"]);
  rows.push(["Running on", info.device]);
  const list = document.getElementById("about-list");
  list.replaceChildren();
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  list.hidden = false;
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  apiKey = keyInput.value.trim() || null;
  if (await showModel()) {
    showModels();
    keyForm.hidden = true;
    errorBox.hidden = true;
    statusLine.classList.remove("sr-only");
    statusLine.textContent = "Key accepted: choose an image.";
  }
});

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  statusLine.textContent = "";
}

// The API's errors are {"detail": "..."}; a proxy in between may answer anything else.
function describe(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  return status === 413 ? "the file is too large" : `the server answered HTTP ${status}`;
}

async function classify(file) {
  const request = ++latest;
  errorBox.hidden = true;
  result.hidden = true;
  statusLine.classList.remove("sr-only");
  statusLine.textContent = `Classifying ${file.name || "the pasted image"}…`;
  const body = new FormData();
  body.append("file", file, file.name || "pasted-image");
  let response;
  let data = null;
  try {
    response = await fetch(forModel(PREDICT_URL), { method: "POST", body, headers: authHeaders() });
    data = await response.json().catch(() => null);
  } catch (err) {
    if (request === latest) showError("The server could not be reached. Check that it is running, then try again.");
    return;
  }
  if (request !== latest) return;
  if (response.status === 401) {
    askForKey(apiKey ? "That key was refused; check it and try again." : null);
    showError("This service needs an API key: enter it above, then choose the image again.");
    keyInput.focus();
    return;
  }
  if (!response.ok) {
    showError(`The image could not be classified: ${describe(data, response.status)}.`);
    return;
  }
  render(file, data);
}

function render(file, data) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.parentElement.hidden = false;
  preview.src = previewUrl;
  document.getElementById("model-input-figure").hidden = !data.input_image;
  modelInput.src = data.input_image || "";

  const percent = (p) => `${(100 * p).toFixed(1)}%`;
  document.getElementById("class-name").textContent = data.class_name;
  document.getElementById("confidence").textContent = `${percent(data.confidence)} confident`;
  const unlike = data.out_of_distribution === true;
  document.getElementById("ood-warning").hidden = !unlike;
  const steps = data.preprocessing;
  const [w, h] = steps.original_size;
  const cut = steps.box ? `${steps.box[2] - steps.box[0]}x${steps.box[3] - steps.box[1]}` : null;
  document.getElementById("note").textContent =
    `Your image is ${w}x${h} pixels` +
    (typeof steps.background === "number" ? `; its background (level ${steps.background}) was taken away` : "") +
    (cut ? `, the item (${cut} pixels) cut out` : "") +
    (steps.inverted ? "; it was inverted, since the model expects a light item on black" : "") +
    `. Model version ${data.model_version}` +
    // Absent for a model without a fitted score.
    (typeof data.ood_score === "number" ? `; out-of-distribution score ${data.ood_score.toFixed(2)}.` : ".");

  // In class order, so the bars stay in place from one image to the next.
  const bars = document.getElementById("bars");
  bars.replaceChildren();
  for (const item of [...data.top_k].sort((a, b) => a.class_index - b.class_index)) {
    const li = document.createElement("li");
    if (item.class_index === data.class_index) li.className = "top";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.class_name;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true"); // the number beside it says the same, in words
    const fill = document.createElement("span");
    fill.style.width = percent(item.probability);
    bar.appendChild(fill);
    const value = document.createElement("span");
    value.className = "p";
    value.textContent = percent(item.probability);
    li.append(name, bar, value);
    bars.appendChild(li);
  }
  statusLine.classList.add("sr-only");
  statusLine.textContent =
    `${data.class_name}, ${percent(data.confidence)} confident.` +
    (unlike ? " The picture does not look like any of the classes." : "");
  result.hidden = false;
}

function openPicker() {
  fileInput.value = ""; // so that choosing the same file again still fires "change"
  fileInput.click();
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) classify(fileInput.files[0]);
});
drop.addEventListener("click", openPicker);
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    openPicker();
  }
});

// A file dropped anywhere is classified: outside the zone the browser would open it instead.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) drop.classList.remove("over"); // left the window
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) classify(file);
  else showError("Nothing to classify: drop an image file.");
});
document.addEventListener("paste", (event) => {
  const item = [...event.clipboardData.items].find((i) => i.kind === "file");
  if (item) classify(item.getAsFile());
  else showError("The clipboard holds no image: copy an image, then paste it here.");
});

// A format the API reads but this browser cannot show (TIFF, say): no broken-image icon.
preview.addEventListener("error", () => {
  preview.parentElement.hidden = true;
});
// A tiny upload (a 28x28 test image) is enlarged: show its pixels sharp, not blurred.
preview.addEventListener("load", () => {
  preview.classList.toggle("pixelated", preview.naturalWidth <= 64 && preview.naturalHeight <= 64);
});

showClasses();
showModel();
showModels();
