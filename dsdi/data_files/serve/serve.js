// dsdi serve: the search page. Talks to the server's JSON API (dsdi/search/serve.py); no other requests.
"use strict";

const state = { info: null, examples: [], likeShots: [], topic: "", hits: [] };
const $ = (id) => document.getElementById(id);

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function api(path, body, contentType = "application/json") {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : { "Content-Type": contentType },
    body: body === undefined ? undefined : (contentType === "application/json" ? JSON.stringify(body) : body),
  });
  const answer = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
  return answer;
}

function searchBody() {
  return {
    query: $("query").value.trim(),
    topic: $("topic").value.trim(),
    examples: state.examples.map((example) => example.id),
    like_shots: state.likeShots,
    topk: Number($("topk").value),
  };
}

async function search() {
  const body = searchBody();
  if (!body.query && !body.examples.length && !body.like_shots.length) {
    say("type a query, pick a feature or drop an example image", true);
    return;
  }
  say("searching…");
  try {
    const answer = await api("/api/search", body);
    state.topic = answer.topic;
    state.hits = answer.hits;
    showHits();
    const judged = answer.hits.filter((hit) => hit.judged !== null).length;
    say(`${answer.hits.length} clips for topic ${answer.topic}` + (judged ? `, ${judged} of them judged` : ""));
  } catch (error) {
    say(error.message, true);
  }
}

function hitCard(hit) {
  const card = document.createElement("figure");
  card.className = "hit" + (hit.judged === 1 ? " relevant" : hit.judged === 0 ? " not-relevant" : "");
  card.dataset.shot = hit.shot_id;
  card.dataset.time = hit.time;
  const shot = encodeURIComponent(hit.shot_id);
  const image = document.createElement("img");
  image.alt = hit.shot_id;
  image.loading = "lazy";
  image.src = `/thumb/${shot}?at=${hit.time.toFixed(3)}`;
  image.title = "play from the peak";
  image.addEventListener("click", () => play(hit, card));
  const caption = document.createElement("figcaption");
  caption.innerHTML = `<div class="shot"></div><div class="meta"></div><div class="scores"></div>
    <div class="marks"><button class="mark-relevant" type="button">relevant</button>
    <button class="mark-not" type="button">not relevant</button>
    <button class="more-like" type="button" title="search for clips like this one">like this</button></div>`;
  caption.querySelector(".shot").textContent = `#${hit.rank} ${hit.shot_id}`;
  caption.querySelector(".meta").textContent = `score ${hit.score.toFixed(3)} · ${hit.video} @ ${hit.time.toFixed(1)} s`;
  caption.querySelector(".scores").textContent = hit.features.map(([name, score]) => `${name} ${score.toFixed(2)}`)
    .join(" · ");
  caption.querySelector(".mark-relevant").addEventListener("click", () => judge(hit, hit.judged === 1 ? null : true));
  caption.querySelector(".mark-not").addEventListener("click", () => judge(hit, hit.judged === 0 ? null : false));
  caption.querySelector(".more-like").addEventListener("click", () => {
    state.likeShots = [hit.shot_id];
    $("topic").value = "";
    showExamples();
    search();
  });
  card.append(image, caption);
  return card;
}

function showHits() {
  $("results").replaceChildren(...state.hits.map(hitCard));
}

function play(hit, card) {
  const video = $("video");
  $("player").hidden = false;
  document.querySelectorAll(".hit.playing").forEach((other) => other.classList.remove("playing"));
  card.classList.add("playing");
  $("playing").textContent = `${hit.shot_id}: ${hit.video} from ${hit.time.toFixed(1)} s`;
  video.addEventListener("loadedmetadata", () => {
    video.currentTime = hit.time;
    video.play().catch((error) => say(`cannot play ${hit.shot_id}: ${error.message}`, true));
  }, { once: true });
  video.src = `/clip/${encodeURIComponent(hit.shot_id)}`;
}

async function judge(hit, relevant) {
  try {
    const answer = await api("/api/judgments", { topic: state.topic, shot_id: hit.shot_id, relevant });
    const count = Object.keys(answer.judged).length;
    $("topic").value = answer.topic;
    await search();
    say(`${count} judgment${count === 1 ? "" : "s"} for topic ${answer.topic} saved in ${answer.file}; re-ranked by them`);
  } catch (error) {
    say(error.message, true);
  }
}

async function exportRun() {
  try {
    const answer = await api("/api/export", searchBody());
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([answer.text], { type: "text/plain" }));
    link.download = answer.path.split(/[\\/]/).pop();
    link.click();
    say(`TREC run written to ${answer.path}`);
  } catch (error) {
    say(error.message, true);
  }
}

function showExamples() {
  const shown = [
    ...state.examples.map((example) => ({ src: example.url, title: example.name, drop: () => {
      state.examples = state.examples.filter((other) => other !== example);
    } })),
    ...state.likeShots.map((shot) => ({ src: `/thumb/${encodeURIComponent(shot)}?at=0`, title: shot, drop: () => {
      state.likeShots = state.likeShots.filter((other) => other !== shot);
    } })),
  ];
  $("examples").replaceChildren(...shown.map((item) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = item.src;
    image.title = item.title;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "stop searching like this";
    remove.addEventListener("click", () => { item.drop(); $("topic").value = ""; showExamples(); });
    figure.append(image, remove);
    return figure;
  }));
}

async function addExamples(files) {
  for (const file of files) {
    if (file.size > state.info.max_upload_bytes) {
      say(`${file.name} is over the ${state.info.max_upload_bytes / 2 ** 20} MB limit: choose a smaller image`, true);
      continue;
    }
    try {
      const answer = await api("/api/examples", file, file.type || "application/octet-stream");
      state.examples.push({ id: answer.id, url: URL.createObjectURL(file), name: file.name });
      $("topic").value = "";
      showExamples();
      await search();
    } catch (error) {
      say(`${file.name}: ${error.message}`, true);
    }
  }
}

function queryName(name) {
  // a feature as the query language takes it: bare, or quoted when it has spaces, brackets, quotes or * or is a
  // keyword
  if (!/[\s()"'*]/.test(name) && !/^(and|or|not)$/i.test(name)) return name;
  return name.includes('"') ? `'${name}'` : `"${name}"`;
}

function addFeature(name) {
  const query = $("query");
  query.value = query.value.trim() ? `${query.value.trim()} AND ${queryName(name)}` : queryName(name);
  $("topic").value = "";
  search();
}

async function start() {
  state.info = await api("/api/info");
  $("facts").textContent = `${state.info.clips} clips · label set ${state.info.labelset} · judgments: ` +
    state.info.judgments;
  const [a, b, c] = state.info.features.map((feature) => queryName(feature.name));
  $("query").placeholder = `a query: ${a} AND ${b} · ${a} NOT ${c} · 2*${b} OR ${c} · or pick features below`;
  $("features").replaceChildren(...state.info.features.map((feature) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = feature.name;
    button.title = `${feature.category}, topic ${feature.topic}`;
    button.addEventListener("click", () => addFeature(feature.name));
    return button;
  }));
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  $("query").addEventListener("input", () => { $("topic").value = ""; });
  $("export").addEventListener("click", exportRun);
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addExamples([...event.dataTransfer.files]);
  });
  $("file").addEventListener("change", () => { addExamples([...$("file").files]); $("file").value = ""; });
}

start().catch((error) => say(`cannot reach the server: ${error.message}`, true));
