// The /docs page: renders the server's openapi.json (operations, parameters, bodies, responses, schemas) and a
// form per operation to try it: the task endpoints get their own (images, sentences, a streamed generation); the
// others a generic one (path parameters and a JSON body). Plain DOM, no dependencies, nothing loaded from elsewhere.
"use strict";

// ---- small helpers -------------------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

// Text with `code` spans, as the descriptions write them.
function prose(text) {
  const parts = String(text || "").split("`");
  return parts.map((part, i) => (i % 2 ? el("code", { text: part }) : document.createTextNode(part)));
}

function url(path) {  // relative to the page, so the docs work behind a path prefix too
  return new URL(path.replace(/^\//, ""), document.baseURI);
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const token = document.getElementById("token").value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function errorText(response) {
  const text = await response.text();
  try {
    return JSON.parse(text).error || text;
  } catch (e) {
    return text || response.statusText;
  }
}

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

function typeOf(schema) {
  if (!schema) return "any";
  const name = refName(schema);
  if (name) return el("a", { href: "#schema-" + name, text: name });
  if (schema.type === "array" || (Array.isArray(schema.type) && schema.items && schema.type.includes("array"))) {
    const inner = typeOf(schema.items);
    const others = Array.isArray(schema.type) ? schema.type.filter((t) => t !== "array").join(" | ") + " | " : "";
    return el("span", {}, others, "array of ", inner);
  }
  let text = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "object";
  if (schema.format === "binary") text = "binary";
  if (schema.enum) text += " (" + schema.enum.join(", ") + ")";
  return text;
}

function constraints(schema) {
  const out = [];
  if (!schema) return out;
  if (schema.minimum !== undefined) out.push("≥ " + schema.minimum);
  if (schema.exclusiveMinimum !== undefined) out.push("> " + schema.exclusiveMinimum);
  if (schema.maximum !== undefined) out.push("≤ " + schema.maximum);
  if (schema.minItems !== undefined) out.push("at least " + schema.minItems);
  if (schema.maxItems !== undefined) out.push("at most " + schema.maxItems);
  if (schema.default !== undefined) out.push("default " + JSON.stringify(schema.default));
  return out.length ? " (" + out.join(", ") + ")" : "";
}

// ---- rendering the document ----------------------------------------------------------------------------------
function renderParameters(params) {
  if (!params || !params.length) return null;
  return el("div", {}, el("h4", { text: "Parameters" }), el("table", {},
    el("tr", {}, el("th", { text: "name" }), el("th", { text: "in" }), el("th", { text: "type" }),
      el("th", { text: "" })),
    params.map((p) => el("tr", {},
      el("td", {}, el("code", { text: p.name }), p.required ? " *" : ""), el("td", { text: p.in }),
      el("td", {}, typeOf(p.schema), constraints(p.schema)), el("td", {}, prose(p.description))))));
}

function renderContent(content) {
  return Object.entries(content || {}).map(([type, media]) => {
    const events = media["x-events"];
    const shape = events
      ? el("span", {}, "events: ", Object.entries(events).map(([name, s], i) =>
          el("span", {}, i ? ", " : "", el("code", { text: name }), " ", typeOf(s))))
      : typeOf(media.schema);
    return el("div", {}, el("code", { text: type }), " ", shape);
  });
}

function renderBody(body) {
  if (!body) return null;
  return el("div", {}, el("h4", { text: "Request body" }), body.description ? el("p", {}, prose(body.description)) : null,
    renderContent(body.content));
}

function renderResponses(responses) {
  return el("div", {}, el("h4", { text: "Responses" }), el("table", {},
    el("tr", {}, el("th", { text: "status" }), el("th", { text: "meaning" }), el("th", { text: "body" })),
    Object.entries(responses).map(([status, r]) => el("tr", {},
      el("td", { text: status }), el("td", {}, prose(r.description)), el("td", {}, renderContent(r.content))))));
}

function renderOperation(path, method, op) {
  const scope = op["x-scope"];
  const section = el("section", { class: "op", id: "op-" + op.operationId, "data-operation": op.operationId },
    el("h3", {}, el("span", { class: "method " + method, text: method.toUpperCase() }), el("code", { text: path }),
      el("span", { text: op.summary }),
      el("span", { class: "scope", text: !scope ? "no token needed" : tokensOn ? "needs a token with scope " + scope
        : "scope " + scope + " (this server checks no tokens)" })),
    el("p", {}, prose(op.description)),
    renderParameters(op.parameters), renderBody(op.requestBody), renderResponses(op.responses));
  const tryIt = (TRY[op.operationId] || genericTry)(path, method, op);
  if (tryIt) section.append(el("div", { class: "try" }, el("h4", { text: "Try it" }), tryIt));
  return section;
}

function renderSchemas(schemas) {
  const root = document.getElementById("schemas");
  root.append(el("h2", { text: "Schemas" }));
  for (const [name, schema] of Object.entries(schemas)) {
    const required = new Set(schema.required || []);
    root.append(el("section", { class: "op", id: "schema-" + name },
      el("h3", {}, el("code", { text: name })), schema.description ? el("p", {}, prose(schema.description)) : null,
      el("table", {}, Object.entries(schema.properties || {}).map(([prop, s]) => el("tr", {},
        el("td", {}, el("code", { text: prop }), required.has(prop) ? " *" : ""),
        el("td", {}, typeOf(s), constraints(s)), el("td", {}, prose(s.description)))))));
  }
}

let tokensOn = false;  // whether the server checks tokens: its document then has a security scheme

function render(spec) {
  tokensOn = Boolean(spec.components.securitySchemes);
  document.title = spec.info.title + " HTTP API";
  document.getElementById("title").textContent = spec.info.title;
  document.getElementById("version").textContent = spec.info.version + " · OpenAPI " + spec.openapi;
  document.getElementById("description").replaceChildren(...prose(spec.info.description));
  const main = document.getElementById("operations");
  const toc = document.getElementById("toc");
  main.replaceChildren();
  for (const tag of spec.tags) {
    const id = "tag-" + tag.name.replace(/\W+/g, "-");
    toc.append(el("a", { href: "#" + id, text: tag.name }));
    main.append(el("h2", { id, text: tag.name }), el("p", {}, prose(tag.description)));
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        if (op.tags.includes(tag.name)) main.append(renderOperation(path, method, op));
      }
    }
  }
  toc.append(el("a", { href: "#schemas", text: "Schemas" }));
  renderSchemas(spec.components.schemas);
  document.body.dataset.ready = "true";
}

// ---- trying operations ---------------------------------------------------------------------------------------
function resultArea(name) {
  return el("div", { class: "result", "data-result": name, "aria-live": "polite" });
}

function showError(area, status, message) {
  area.dataset.state = "error";
  area.replaceChildren(el("p", { class: "error" }, el("strong", { text: String(status) }), " ", message));
}

function rawJson(doc) {
  return el("details", {}, el("summary", { text: "JSON" }), el("pre", { text: JSON.stringify(doc, null, 2) }));
}

function field(label, input, wide) {
  return el("label", { class: wide ? "wide" : null }, label, input);
}

function tryClassify(path) {
  const files = el("input", { type: "file", name: "images", accept: "image/*", multiple: true });
  const topK = el("input", { type: "number", name: "top_k", min: 0, value: 3 });
  const model = el("input", { name: "model", placeholder: "default" });
  const area = resultArea("classify");
  const form = el("form", { "data-try": "classify" }, field("Images", files), field("top_k", topK),
    field("model", model), el("button", { type: "submit", text: "Classify" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = Array.from(files.files);
    if (!chosen.length) return showError(area, "", "choose one or more images first");
    area.dataset.state = "running";
    area.replaceChildren(el("p", { class: "status", text: "Classifying…" }));
    const query = new URLSearchParams({ top_k: topK.value || "0" });
    if (model.value.trim()) query.set("model", model.value.trim());
    let body, type = {};
    if (chosen.length === 1) {
      body = chosen[0];
      type = { "Content-Type": chosen[0].type || "application/octet-stream" };
    } else {
      body = new FormData();
      for (const file of chosen) body.append("images", file, file.name);
    }
    const response = await fetch(url(path + "?" + query), { method: "POST", headers: headers(type), body });
    if (!response.ok) return showError(area, response.status, await errorText(response));
    const doc = await response.json();
    area.replaceChildren(el("p", { class: "status", text: doc.model_name + " version " + doc.model_version }),
      el("div", { class: "images" }, doc.classifications.map((c, i) => el("div", { class: "image" },
        el("img", { src: URL.createObjectURL(chosen[i]), alt: chosen[i].name }),
        el("div", {}, el("div", { text: chosen[i].name }), el("ol", {}, c.labels.map((l) => el("li",
          { "data-label": l.label }, el("strong", { text: l.label }), " " + (100 * l.probability).toFixed(1) + "%",
          el("span", { class: "bar", style: "width:" + Math.round(60 * l.probability) + "px" })))))))),
      rawJson(doc));
    area.dataset.state = "done";
  });
  return el("div", {}, form, area);
}

function trySentiment(path) {
  const texts = el("textarea", { name: "texts", placeholder: "one text per line" }, "What a wonderful day\nAwful.");
  const model = el("input", { name: "model", placeholder: "default" });
  const area = resultArea("sentiment");
  const form = el("form", { "data-try": "sentiment" }, field("Texts, one per line", texts, true),
    field("model", model), el("button", { type: "submit", text: "Analyze" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const lines = texts.value.split("\n").filter((t) => t.trim());
    area.dataset.state = "running";
    area.replaceChildren(el("p", { class: "status", text: "Analyzing…" }));
    const request = { texts: lines };
    if (model.value.trim()) request.model = model.value.trim();
    const response = await fetch(url(path), { method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(request) });
    if (!response.ok) return showError(area, response.status, await errorText(response));
    const doc = await response.json();
    area.replaceChildren(el("p", { class: "status", text: doc.model_name + " version " + doc.model_version }),
      el("table", {}, el("tr", {}, el("th", { text: "text" }), el("th", { text: "sentiment" }),
        el("th", { text: "probability" })),
      doc.sentiments.map((s, i) => el("tr", { "data-label": s.label }, el("td", { text: lines[i] }),
        el("td", {}, el("strong", { text: s.label })), el("td", { text: (100 * s.probability).toFixed(1) + "%" })))),
      rawJson(doc));
    area.dataset.state = "done";
  });
  return el("div", {}, form, area);
}

// Server-Sent Events from a fetch body, as they arrive: calls onEvent(name, data) per event.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let name = "message", data = "";
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      onEvent(name, JSON.parse(data));
    }
  }
}

function tryGenerate(path) {
  const prompt = el("textarea", { name: "prompt" }, "import os");
  const maxTokens = el("input", { type: "number", name: "max_new_tokens", min: 0, value: 32 });
  const temperature = el("input", { type: "number", name: "temperature", min: 0, max: 10, step: 0.1,
    placeholder: "default" });
  const seed = el("input", { type: "number", name: "seed", min: 0, placeholder: "random" });
  const stream = el("input", { type: "checkbox", name: "stream", checked: true });
  const go = el("button", { type: "submit", text: "Generate" });
  const stop = el("button", { type: "button", class: "secondary", text: "Stop", disabled: true });
  const area = resultArea("generate");
  const form = el("form", { "data-try": "generate" }, field("Prompt", prompt, true), field("max_new_tokens", maxTokens),
    field("temperature", temperature), field("seed", seed), el("label", {}, "stream", stream), go, stop);
  let controller = null;
  stop.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = { prompt: prompt.value, max_new_tokens: Number(maxTokens.value || 0), stream: stream.checked };
    if (temperature.value !== "") request.temperature = Number(temperature.value);
    if (seed.value !== "") request.seed = Number(seed.value);
    const completion = el("span", { class: "completion", "data-deltas": "0" });
    const status = el("p", { class: "status", text: "Generating…" });
    area.dataset.state = "running";
    area.replaceChildren(el("pre", { class: "generated" }, el("span", { class: "prompt", text: prompt.value }),
      completion), status);
    controller = new AbortController();
    go.disabled = true;
    stop.disabled = false;
    const finish = (done) => {
      status.textContent = "finished: " + done.finish_reason + " · " + done.generated_tokens + " tokens generated, " +
        done.prompt_tokens + " prompt tokens" + (done.prompt_truncated ? " (truncated)" : "") + " · " +
        done.model_name + " version " + done.model_version;
      status.dataset.finishReason = done.finish_reason;
      area.dataset.state = "done";
    };
    try {
      const response = await fetch(url(path), { method: "POST", signal: controller.signal,
        headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(request) });
      if (!response.ok) return showError(area, response.status, await errorText(response));
      if (!request.stream) {
        const doc = await response.json();
        completion.textContent = doc.text;
        return finish(doc);
      }
      await readEvents(response, (name, data) => {
        if (name === "delta") {
          completion.append(data.text);
          completion.dataset.deltas = String(Number(completion.dataset.deltas) + 1);
        } else if (name === "finished") {
          finish(data);
        } else if (name === "error") {
          status.className = "status error";
          status.textContent = data.status + " " + data.error;
          area.dataset.state = "error";
        }
      });
    } catch (err) {
      status.textContent = err.name === "AbortError" ? "stopped (the server cancelled the generation)" : String(err);
      area.dataset.state = err.name === "AbortError" ? "stopped" : "error";
    } finally {
      go.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
  return el("div", {}, form, area);
}

// Any other operation: its path parameters and, when it takes JSON, a body prefilled with the example.
function genericTry(path, method, op) {
  const params = (op.parameters || []).filter((p) => p.in === "path");
  const inputs = params.map((p) => el("input", { name: p.name, placeholder: p.name, required: true }));
  const json = op.requestBody && op.requestBody.content["application/json"];
  const body = json ? el("textarea", { name: "body" }, JSON.stringify(json.example || {}, null, 1)) : null;
  const area = resultArea(op.operationId);
  const form = el("form", { "data-try": op.operationId },
    params.map((p, i) => field(p.name, inputs[i])), body ? field("JSON body", body, true) : null,
    el("button", { type: "submit", text: "Send" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let target = path;
    params.forEach((p, i) => { target = target.replace("{" + p.name + "}", encodeURIComponent(inputs[i].value)); });
    const init = { method: method.toUpperCase(), headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = body.value;
    const response = await fetch(url(target), init);
    const text = await response.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: as it is */ }
    area.replaceChildren(el("p", { class: response.ok ? "status" : "error", text: response.status + " " +
      response.statusText }), el("pre", { text: shown }));
    area.dataset.state = response.ok ? "done" : "error";
  });
  return el("div", {}, form, area);
}

const TRY = { classify: tryClassify, sentiment: trySentiment, generate: tryGenerate };

fetch(url("openapi.json"))
  .then((response) => (response.ok ? response.json() : Promise.reject(new Error("openapi.json: " + response.status))))
  .then(render)
  .catch((err) => {
    document.getElementById("operations").replaceChildren(el("p", { class: "error", text: String(err) }));
    document.body.dataset.ready = "error";
  });
