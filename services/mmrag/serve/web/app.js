// mmrag's page: ask (streamed answer with [n] links to source cards) or search, see the evidence, add documents.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere: the page must work offline.
// Timing marks (performance.mark) the browser test reads: mmrag:ready, mmrag:token-arrived, mmrag:token-shown.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("mmrag-key") || "", query: "", run: 0, controller: null, blobs: [] };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// ------------------------------------------------------------------------------------------------- errors
class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function explain(err) {
  if (!(err instanceof ApiError)) {
    if (err && err.name === "AbortError") return "Stopped.";
    return "Cannot reach the server (" + (err && err.message ? err.message : "network error") + "). Is it running?";
  }
  const msg = err.message ? " " + err.message : "";
  switch (err.status) {
    case 401:
      return "This server needs an API key: enter it above and try again." + msg;
    case 403:
      return "Your API key may not do this." + msg;
    case 404:
      return "Not found." + msg;
    case 413:
      return "Too large." + msg;
    case 429:
      return "Too many requests for this key: try again" + (err.retryAfter ? " in " + err.retryAfter + " s." : " shortly.") + msg;
    case 503:
      return "The server is busy or unavailable: try again" + (err.retryAfter ? " in " + err.retryAfter + " s." : " shortly.") + msg;
    default:
      return err.status >= 500 ? "The server failed (" + err.status + ")." + msg : "Request refused (" + err.status + ")." + msg;
  }
}

function showError(err) {
  const box = $("error");
  box.textContent = typeof err === "string" ? err : explain(err);
  box.hidden = false;
  // the message takes the focus (the Ask button was disabled under it); a missing key sends it to the key field
  if (err instanceof ApiError && err.status === 401) $("key").focus();
  else box.focus();
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

// ------------------------------------------------------------------------------------------------- HTTP
function headers(extra = {}) {
  const h = { ...extra };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

async function check(resp) {
  if (resp.ok) return resp;
  let code = "http_" + resp.status, message = "";
  try {
    const body = await resp.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch (_) { /* not JSON: keep the status */ }
  throw new ApiError(resp.status, code, message, resp.headers.get("Retry-After"));
}

async function api(path, { method = "GET", body, signal, timeoutMs = 60000 } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  if (signal) signal.addEventListener("abort", () => ctl.abort());
  try {
    const init = { method, headers: headers(body && !(body instanceof FormData) ? { "Content-Type": "application/json" } : {}), signal: ctl.signal };
    if (body) init.body = body instanceof FormData ? body : JSON.stringify(body);
    return await check(await fetch(path, init));
  } catch (e) {
    if (e.name === "AbortError" && !(signal && signal.aborted)) throw new Error("no answer within " + timeoutMs / 1000 + " s");
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// API paths are relative to the page, so a gateway under a route prefix works; item URLs come absolute from the API.

// Images need the key when auth is on: an <img src> cannot send it, so they are fetched and shown as blobs.
async function setImage(img, url) {
  if (!state.key) {
    img.src = url;
    return;
  }
  try {
    const resp = await check(await fetch(url, { headers: headers() }));
    const src = URL.createObjectURL(await resp.blob());
    state.blobs.push(src);
    img.src = src;
  } catch (e) {
    img.alt = "image unavailable: " + explain(e);
  }
}

// ------------------------------------------------------------------------------------------------- collections
async function loadCollections() {
  const sel = $("collection");
  try {
    const body = await (await api("v1/collections", { timeoutMs: 15000 })).json();
    const names = Object.keys(body.collections || {}).sort();
    const keep = sel.value || sessionStorage.getItem("mmrag-collection") || "";
    sel.replaceChildren(el("option", { value: "", text: "(default)" }));
    for (const n of names) {
      const info = body.collections[n] || {};
      const kinds = Object.entries(info.items || {}).map(([m, n]) => n + " " + m + (n === 1 ? "" : "s"));
      const count = kinds.length ? " (" + kinds.join(", ") + ")" : " (empty)";
      sel.append(el("option", { value: n, text: n + count }));
    }
    if (names.includes(keep)) sel.value = keep;
    else if (names.length === 1) sel.value = names[0];
    if (!$("upload-collection").value) $("upload-collection").value = sel.value || names[0] || "docs";
  } catch (e) {
    showError(e);
  }
}

// ------------------------------------------------------------------------------------------------- answer text
const CITE = /\[\s*(\d+(?:\s*(?:[-–,;]|and)\s*\d+)*)\s*\]/g;

function citedNumbers(group) {
  const out = [];
  for (const part of group.split(/[,;]|and/)) {
    const m = part.match(/(\d+)\s*[-–]\s*(\d+)/);
    if (m) for (let i = +m[1]; i <= Math.min(+m[2], +m[1] + 50); i++) out.push(i);
    else if (part.trim()) out.push(+part.trim());
  }
  return out;
}

// The answer's text with each [n] a link to source card n (text nodes only: the answer is never parsed as HTML).
function renderAnswer(node, text) {
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(CITE)) {
    parts.push(document.createTextNode(text.slice(last, m.index)));
    parts.push("[");
    citedNumbers(m[1]).forEach((n, i) => {
      if (i) parts.push(", ");
      parts.push(el("a", { class: "cite", href: "#src-" + n, onclick: (ev) => focusCard(ev, n), text: String(n) }));
    });
    parts.push("]");
    last = m.index + m[0].length;
  }
  parts.push(document.createTextNode(text.slice(last)));
  node.replaceChildren(...parts);
}

function focusCard(ev, n) {
  const card = $("src-" + n);
  if (!card) return;
  ev.preventDefault();
  card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  card.classList.add("flash");
  setTimeout(() => card.classList.remove("flash"), 1200);
  const btn = card.querySelector("button");
  if (btn) btn.focus({ preventScroll: true });
}

// ------------------------------------------------------------------------------------------------- source cards
const baseName = (uri) => uri.replace(/[\\/]+$/, "").split(/[\\/]/).pop().replace(/^upload:/, "");
const fmtTime = (s) => (s === null || s === undefined ? "" : Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0") + (s % 1 ? "." + Math.round((s % 1) * 10) : ""));

function where(item) {
  if (item.modality === "clip") return "clip " + fmtTime(item.start_s) + "–" + fmtTime(item.end_s);
  if (item.modality === "audio") return "audio " + fmtTime(item.start_s) + "–" + fmtTime(item.end_s);
  if (item.modality === "page") return "page " + item.page;
  return "image";
}

function snippetNode(text, spans) {
  const p = el("p", { class: "snippet" });
  let last = 0;
  for (const [s, e] of spans || []) {
    if (s < last) continue;
    p.append(text.slice(last, s), el("mark", { text: text.slice(s, e) }));
    last = e;
  }
  p.append(text.slice(last));
  return p;
}

function card(item, n) {
  const img = el("img", { alt: "thumbnail of " + baseName(item.source) + ", " + where(item), loading: "lazy", width: 96 });
  setImage(img, item.thumbnail_url);
  const label = { clip: "Open the clip's frames", audio: "Open the audio item's transcript" }[item.modality] || "Open the page with its evidence";
  const thumb = el("button", { type: "button", class: "thumb", "aria-label": label + " (source " + n + ")", onclick: () => openViewer(item, n) }, img);
  const ev = item.evidence;
  const badges = [el("span", { class: "badge", text: item.modality })];
  if (item.cited) badges.push(el("span", { class: "badge cited", text: "cited" }));
  if (ev && ev.method === "maxsim" && ev.regions.length) badges.push(el("span", { class: "badge", text: ev.regions.length + (ev.regions.length === 1 ? " region" : " regions") }));
  const body = el(
    "div",
    { class: "body" },
    el("div", { class: "title" }, "[" + n + "] " + baseName(item.source), ...badges),
    el("div", { class: "sub", text: where(item) + " · score " + item.score.toFixed(3) }),
    snippetNode(item.snippet || "", ev ? ev.highlights : []),
  );
  return el("li", { class: "card", id: "src-" + n, "data-id": item.id }, thumb, body);
}

function showSources(items) {
  const list = $("sources");
  state.items = items;
  list.replaceChildren(...items.map((it, i) => card(it, it.n || i + 1)));
  $("sources-box").hidden = !items.length;
  const note = items.map((it) => it.evidence && it.evidence.note).find(Boolean);
  $("evidence-note").hidden = !note;
  $("evidence-note").textContent = note || "";
}

// ------------------------------------------------------------------------------------------------- viewer
function figure(url, regions, alt) {
  const img = el("img", { alt });
  setImage(img, url);
  const fig = el("div", { class: "figure" }, img);
  regions.forEach((r, i) => {
    const pct = (v) => (v * 100).toFixed(2) + "%";
    const tip = "region " + (i + 1) + ": " + Math.round(r.score * 100) + "% of the match" + (r.terms.length ? " · " + r.terms.join("").trim() : "");
    const box = el("div", { class: "box", title: tip }, el("span", { text: String(i + 1) }));
    Object.assign(box.style, { left: pct(r.x0), top: pct(r.y0), width: pct(r.x1 - r.x0), height: pct(r.y1 - r.y0) });
    fig.append(box);
  });
  return fig;
}

function regionList(regions) {
  if (!regions.length) return null;
  const of = (r) => (r.frame === null || r.frame === undefined ? "the page's" : "the frame at " + fmtTime(r.t_s) + "'s");
  return el(
    "ol",
    { class: "regions", "aria-label": "evidence regions, best first" },
    ...regions.map((r) =>
      el("li", { text: Math.round(r.score * 100) + "% of " + of(r) + " match" + (r.terms.length ? " — query tokens: " + r.terms.join("").trim() : "") }),
    ),
  );
}

async function openViewer(item, n) {
  const dlg = $("viewer");
  const body = $("viewer-body");
  $("viewer-title").textContent = "[" + n + "] " + baseName(item.source) + " — " + where(item);
  const ev = item.evidence;
  $("viewer-note").hidden = !(ev && ev.note);
  $("viewer-note").textContent = (ev && ev.note) || "";
  body.replaceChildren(el("p", { class: "meta", text: "Loading…" }));
  if (!dlg.open) dlg.showModal();
  let info;
  try {
    info = await (await api(item.image_url.replace(/\/image$/, ""), { timeoutMs: 15000 })).json();
  } catch (e) {
    body.replaceChildren(el("p", { class: "meta", text: explain(e) }));
    return;
  }
  const regions = (ev && ev.regions) || [];
  const parts = [];
  if (!ev) parts.push(el("p", { class: "meta", text: "Evidence regions were not asked for: tick “Evidence regions” and ask again." }));
  else if (ev.method !== "maxsim") parts.push(el("p", { class: "meta", text: "Found by its text: the query's words are marked below." }));
  if (info.modality === "clip") {
    if (info.video_url) {
      const video = el("video", { controls: true, preload: "metadata", "aria-label": "source video, from " + fmtTime(info.start_s) });
      parts.push(video);
      playFrom(video, info);
    } else {
      parts.push(el("p", { class: "meta", text: "The source video is not reachable from the server (only its sampled frames are stored): frames below." }));
    }
    const frames = info.frame_urls.map((url, f) =>
      el(
        "figure",
        {},
        figure(url, regions.filter((r) => r.frame === f), "frame at " + fmtTime(info.frame_ts[f])),
        el("figcaption", { text: "at " + fmtTime(info.frame_ts[f]) }),
      ),
    );
    parts.push(el("div", { class: "frames", role: "list", "aria-label": "sampled frames" }, ...frames));
    if (info.doc_id) parts.push(summaryBox(info.doc_id));
  } else {
    // an audio item's picture is its drawn waveform; its words are the text below
    const what = info.modality === "audio" ? "waveform of " : "page image of ";
    parts.push(figure(info.image_url, regions, what + baseName(info.source) + ", " + where(info)));
  }
  const list = regionList(regions.filter((r) => info.modality !== "clip" || r.frame !== null));
  if (list) parts.push(list);
  if (info.text) parts.push(el("h3", { text: "Text" }), snippetNode(item.snippet || "", ev ? ev.highlights : []));
  if (state.query && item.modality !== "image") {
    const first = regions.find((r) => r.frame !== null && r.frame !== undefined);
    const href = info.evidence_url + "?query=" + encodeURIComponent(state.query) + (first ? "&frame=" + first.frame : "");
    if (!state.key) parts.push(el("p", { class: "meta" }, el("a", { href, target: "_blank", rel: "noopener", text: "Server-rendered evidence image" })));
  }
  body.replaceChildren(...parts);
}

// A video's summary (POST /v1/videos/{doc_id}/summary, streamed): chapters as they finish, then the summary.
function summaryBox(docId) {
  const list = el("ol", { class: "chapters", "aria-label": "chapters" });
  const text = el("p", { class: "summary-text" });
  const meta = el("p", { class: "meta" });
  const button = el("button", { type: "button", class: "summarize", text: "Summarize the video" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    list.replaceChildren();
    text.textContent = "";
    meta.textContent = "Summarizing…";
    const chapters = [];
    const show = () =>
      list.replaceChildren(
        ...chapters
          .sort((a, b) => a.index - b.index)
          .map((c) => el("li", {}, el("strong", { text: fmtTime(c.start_s) + "–" + fmtTime(c.end_s) + " " }), c.summary)),
      );
    try {
      const resp = await api("v1/videos/" + docId + "/summary", { method: "POST", body: { stream: true }, timeoutMs: 600000 });
      for await (const { event, data } of events(resp)) {
        if (event === "chapter") {
          chapters.push(data);
          show();
        } else if (event === "token") text.textContent += data.text;
        else if (event === "error") throw new ApiError(502, data.error.code, data.error.message);
        else if (event === "done") {
          const t = data.timings || {};
          meta.textContent = data.cached ? "From the cache." : "Made in " + Math.round(t.total || 0) + " ms.";
        }
      }
    } catch (e) {
      meta.textContent = explain(e);
    } finally {
      button.disabled = false;
    }
  });
  return el("section", { class: "summary", "aria-label": "video summary" }, button, meta, list, text);
}

async function playFrom(video, info) {
  const start = () => {
    video.currentTime = info.start_s || 0;
  };
  video.addEventListener("loadedmetadata", start, { once: true });
  if (!state.key) {
    video.src = info.video_url + "#t=" + (info.start_s || 0);
    return;
  }
  try {
    const resp = await check(await fetch(info.video_url, { headers: headers() }));
    if (resp.status === 206) throw new Error("the video is too large to load with a key here; use its frames");
    const src = URL.createObjectURL(await resp.blob());
    state.blobs.push(src);
    video.src = src;
  } catch (e) {
    video.replaceWith(el("p", { class: "meta", text: explain(e) }));
  }
}

// ------------------------------------------------------------------------------------------------- ask / search
function request(q) {
  const body = { query: q, k: Math.max(1, Math.min(20, +$("k").value || 4)) };
  const collection = $("collection").value;
  if (collection) body.collection = collection;
  if ($("mode").value) body.mode = $("mode").value;
  if ($("evidence").checked) body.evidence = true;
  return body;
}

async function search(q, signal) {
  const t0 = performance.now();
  const body = await (await api("v1/search", { method: "POST", body: request(q), signal })).json();
  showSources(body.results);
  setStatus(body.results.length ? "" : "Nothing found in this collection.");
  $("answer-meta").textContent = "";
  performance.measure("mmrag:search", { start: t0 });
  return body;
}

// Server-sent events from a POST: read the stream, split events at blank lines.
async function* events(resp) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const raw = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message", data = "";
      for (const line of raw.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      yield { event, data: data ? JSON.parse(data) : null };
    }
  }
}

async function answer(q, signal) {
  const out = $("answer");
  $("answer-box").hidden = false;
  out.replaceChildren();
  $("answer-meta").textContent = "";
  setStatus("Searching and generating…");
  const resp = await api("v1/answer", { method: "POST", body: { ...request(q), stream: true }, signal, timeoutMs: 300000 });
  let text = "", first = true, finished = false;
  for await (const { event, data } of events(resp)) {
    if (event === "token") {
      if (first) performance.mark("mmrag:token-arrived");
      text += data.text;
      renderAnswer(out, text);
      if (first) {
        first = false;
        setStatus("");
        requestAnimationFrame(() => performance.mark("mmrag:token-shown"));
      }
    } else if (event === "citations") {
      showSources(data.citations);
    } else if (event === "done") {
      finished = true;
      const t = data.timings || {};
      const bits = [];
      if (t.ttft !== undefined) bits.push("first token after " + Math.round(t.ttft) + " ms");
      if (t.total !== undefined) bits.push("total " + Math.round(t.total) + " ms");
      if (t.evidence !== undefined) bits.push("evidence " + Math.round(t.evidence) + " ms");
      if (data.finish_reason === "length") bits.push("cut at the token limit");
      $("answer-meta").textContent = bits.join(" · ");
    } else if (event === "error") {
      throw new ApiError(502, data.error.code, data.error.message);
    }
  }
  if (!text) out.textContent = "(the model returned no text)";
  if (!finished) throw new Error("the answer stream ended early");
  setStatus("");
}

async function onAsk(ev) {
  ev.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  if (state.controller) state.controller.abort();
  state.controller = new AbortController();
  state.query = q;
  for (const b of state.blobs.splice(0)) URL.revokeObjectURL(b);
  clearError();
  const go = $("go");
  go.disabled = true;
  const searchOnly = document.querySelector("input[name=action]:checked").value === "search";
  $("answer-box").hidden = searchOnly;
  $("sources-box").hidden = true;
  try {
    if (searchOnly) {
      setStatus("Searching…");
      await search(q, state.controller.signal);
    } else {
      await answer(q, state.controller.signal);
    }
  } catch (e) {
    setStatus("");
    if (!$("answer").textContent) $("answer-box").hidden = true;
    showError(e);
  } finally {
    go.disabled = false;
    if (document.activeElement === document.body) $("query").focus();
  }
}

// ------------------------------------------------------------------------------------------------- upload
async function onUpload(ev) {
  ev.preventDefault();
  clearError();
  const files = $("files").files;
  const name = $("upload-collection").value.trim();
  if (!files.length) return showError("Choose one or more files first.");
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const li = el("li", { text: "Uploading " + files.length + " file(s) into " + name + "…" });
  $("jobs").prepend(li);
  try {
    const job = await (await api("v1/collections/" + encodeURIComponent(name) + "/documents", { method: "POST", body: form, timeoutMs: 600000 })).json();
    await follow(job, li);
  } catch (e) {
    li.textContent = e instanceof ApiError && e.status === 404 && e.code === "not_found" && /ingest/.test(e.message)
      ? "Uploads are not enabled on this server (" + e.message + ")."
      : "Upload failed: " + explain(e);
  }
}

async function follow(job, li) {
  for (;;) {
    const c = job.counts || {};
    const files = (job.files || []).map((f) => f.name + ": " + f.state + (f.errors && f.errors.length ? " (" + f.errors.map((x) => x.reason || x).join("; ") + ")" : "")).join(", ");
    li.textContent = `Job ${job.id} — ${job.state}: ${c.files || 0}/${c.files_total || 0} files, ${c.pages || 0} pages, ${c.clips || 0} clips, ${c.images || 0} images` + (files ? " — " + files : "") + (job.message ? " — " + job.message : "");
    if (job.state === "done" || job.state === "failed") {
      loadCollections();
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
    job = await (await api("v1/jobs/" + encodeURIComponent(job.id), { timeoutMs: 15000 })).json();
  }
}

// ------------------------------------------------------------------------------------------------- start
function init() {
  $("key").value = state.key;
  $("key").addEventListener("change", () => {
    state.key = $("key").value.trim();
    sessionStorage.setItem("mmrag-key", state.key);
    clearError();
    loadCollections();
  });
  $("collection").addEventListener("change", () => sessionStorage.setItem("mmrag-collection", $("collection").value));
  for (const r of document.querySelectorAll("input[name=action]"))
    r.addEventListener("change", () => ($("go").textContent = r.value === "search" && r.checked ? "Search" : "Ask"));
  $("ask").addEventListener("submit", onAsk);
  $("upload").addEventListener("submit", onUpload);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => (e.preventDefault(), drop.classList.add("over")));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    $("files").files = e.dataTransfer.files;
  });
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("click", (e) => e.target === $("viewer") && $("viewer").close());
  $("query").focus();
  performance.mark("mmrag:ready");
  loadCollections();
}

init();
