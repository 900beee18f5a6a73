// metsprep QC pages: the sortable, filterable case index and the per-case review page
// (NiiVue viewer, lesion list, decisions). Data comes from the JSON block the pipeline
// writes into each page; decisions go to `metsprep review`'s /api/ratings when the page is
// served by it, else to this browser's storage and a downloadable qc/ratings.tsv.
"use strict";

const STORE_KEY = "metsprep-ratings";
const served = location.protocol === "http:" || location.protocol === "https:";

function pageData() {
  return JSON.parse(document.getElementById("qc-data").textContent);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

// ---------------------------------------------------------------- decisions

function keyOf(d) {
  return d.case_id + "|" + (d.roi_number === null || d.roi_number === "" ? "" : d.roi_number);
}

function localDecisions() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY) || "{}"); } catch (e) { return {}; }
}

async function loadDecisions() {
  const local = localDecisions();
  if (!served) return local;
  try {
    const response = await fetch("/api/ratings");
    if (!response.ok) return local;
    const saved = {};
    for (const d of await response.json()) saved[keyOf(d)] = d;
    return Object.assign(saved, local);
  } catch (e) { return local; }
}

function tsv(decisions) {
  const rows = [["case_id", "roi_number", "rating", "comment", "reviewed_at"].join("\t")];
  for (const d of Object.values(decisions)) {
    const clean = (v) => String(v == null ? "" : v).replace(/[\t\r\n]+/g, " ");
    rows.push([d.case_id, d.roi_number == null ? "" : d.roi_number, d.rating, d.comment, d.reviewed_at].map(clean).join("\t"));
  }
  return rows.join("\n") + "\n";
}

async function saveDecisions(list, status) {
  const local = localDecisions();
  for (const d of list) local[keyOf(d)] = d;
  localStorage.setItem(STORE_KEY, JSON.stringify(local));
  if (served) {
    try {
      const response = await fetch("/api/ratings", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(list),
      });
      const reply = await response.json();
      if (!response.ok) throw new Error(reply.error || response.statusText);
      for (const d of list) delete local[keyOf(d)];  // the server's file holds them now
      localStorage.setItem(STORE_KEY, JSON.stringify(local));
      status.textContent = `Saved ${reply.saved} decision(s) to ${reply.file}. The next pipeline run reads them.`;
      status.className = "saved";
      return;
    } catch (e) {
      status.textContent = `Not saved to the server (${e.message}); kept in this browser.`;
      status.className = "error";
      return;
    }
  }
  status.textContent = "Kept in this browser (the page is not served by `metsprep review`): download qc/ratings.tsv below.";
  status.className = "saved";
}

function downloadLink(decisions) {
  const blob = new Blob([tsv(decisions)], {type: "text/tab-separated-values"});
  return el("a", {href: URL.createObjectURL(blob), download: "ratings.tsv", id: "download"}, "Download ratings.tsv");
}

// ---------------------------------------------------------------- index

function initIndex() {
  const data = pageData();
  const state = {sort: "n_flags", descending: true, text: "", flag: "", status: ""};
  const tbody = document.querySelector("#cases tbody");
  const count = document.getElementById("shown");

  const flagCounts = {};
  for (const row of data.cases) for (const f of row.flags) flagCounts[f] = (flagCounts[f] || 0) + 1;
  const flagSelect = document.getElementById("flag-filter");
  for (const [flag, n] of Object.entries(flagCounts).sort((a, b) => b[1] - a[1])) {
    flagSelect.append(el("option", {value: flag}, `${flag} (${n})`));
  }
  const counts = document.getElementById("flag-counts");
  for (const [flag, n] of Object.entries(flagCounts).sort((a, b) => b[1] - a[1])) {
    counts.append(el("li", {}, el("a", {href: "#", "data-flag": flag, onclick: (e) => {
      e.preventDefault(); flagSelect.value = flag; state.flag = flag; render();
    }}, flag), ` ${n}`));
  }

  function compare(a, b) {
    const x = a[state.sort], y = b[state.sort];
    const missing = (v) => v === null || v === undefined || v === "";
    if (missing(x) && missing(y)) return a.case_id < b.case_id ? -1 : 1;
    if (missing(x)) return 1;
    if (missing(y)) return -1;
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return (state.descending ? -order : order) || (a.case_id < b.case_id ? -1 : 1);
  }

  function render() {
    const text = state.text.toLowerCase();
    const rows = data.cases.filter((r) =>
      (!state.flag || r.flags.includes(state.flag)) &&
      (!state.status || r.status === state.status) &&
      (!text || (r.case_id + " " + r.flags.join(" ") + " " + (r.status_reason || "")).toLowerCase().includes(text)));
    rows.sort(compare);
    const fragment = document.createDocumentFragment();
    for (const r of rows) {
      const tr = el("tr", {class: r.flags.length ? "flagged" : "clean", "data-case": r.case_id},
        el("td", {}, r.page ? el("a", {href: r.page}, r.case_id) : r.case_id),
        el("td", {}, r.status), el("td", {}, r.n_flags), el("td", {class: "flags"}, r.flags.join(", ")),
        el("td", {}, r.n_lesions), el("td", {}, r.total_lesion_volume_mm3 == null ? "" : r.total_lesion_volume_mm3.toFixed(0)),
        el("td", {}, r.t1_registration_check_mm == null ? "" : r.t1_registration_check_mm.toFixed(2)),
        el("td", {}, r.t2_registration_check_mm == null ? "" : r.t2_registration_check_mm.toFixed(2)),
        el("td", {}, r.sequence_confidence || ""), el("td", {}, r.qc_rating || ""),
        el("td", {class: "reason"}, r.status_reason || ""));
      fragment.append(tr);
    }
    tbody.replaceChildren(fragment);
    count.textContent = `${rows.length} of ${data.cases.length} cases shown`;
    for (const th of document.querySelectorAll("#cases th[data-sort]")) {
      th.classList.toggle("sorted", th.dataset.sort === state.sort);
      th.dataset.direction = th.dataset.sort === state.sort ? (state.descending ? "desc" : "asc") : "";
    }
  }

  for (const th of document.querySelectorAll("#cases th[data-sort]")) {
    th.addEventListener("click", () => {
      state.descending = state.sort === th.dataset.sort ? !state.descending : th.dataset.sort === "n_flags";
      state.sort = th.dataset.sort;
      render();
    });
  }
  document.getElementById("search").addEventListener("input", (e) => { state.text = e.target.value; render(); });
  flagSelect.addEventListener("change", (e) => { state.flag = e.target.value; render(); });
  document.getElementById("status-filter").addEventListener("change", (e) => { state.status = e.target.value; render(); });
  render();
  document.body.dataset.ready = "1";
}

// ---------------------------------------------------------------- case page

async function initViewer(data) {
  const note = document.getElementById("viewer-note");
  if (!data.volumes.length) { note.textContent = "No image to show (the case is excluded)."; return null; }
  if (!served) {
    note.textContent = "The 3D viewer needs the page served: run `metsprep review <output folder>` and open the address it prints (browsers do not let a page opened from disk read the images).";
    return null;
  }
  const nv = new niivue.Niivue({show3Dcrosshair: true, backColor: [0, 0, 0, 1], isColorbar: false, crosshairColor: [0, 1, 0, 1]});
  await nv.attachTo("viewer");
  // T1C first (the background); T1 and T2 on top, hidden until chosen; the lesions last.
  const list = data.volumes.map((v, i) => ({url: v.url, name: v.name + ".nii.gz", colormap: "gray", opacity: i ? 0 : 1}));
  if (data.overlay) list.push({url: data.overlay, name: "lesions.nii.gz", colormap: "red", opacity: 0.6, cal_min: 0.5, cal_max: 1});
  await nv.loadVolumes(list);
  nv.setSliceType(nv.sliceTypeMultiplanar);
  const buttons = document.getElementById("volumes");
  data.volumes.forEach((volume, shown) => {
    buttons.append(el("button", {type: "button", "data-volume": volume.name, onclick: () => {
      data.volumes.forEach((_, i) => { if (i) nv.setOpacity(i, i === shown ? 1 : 0); });
      nv.updateGLVolume();
      note.textContent = `Showing ${volume.name}` + (volume.name === "T1C" ? "" : " (registered onto the T1C grid)");
    }}, volume.name));
  });
  const opacity = document.getElementById("overlay-opacity");
  opacity.addEventListener("input", () => {
    if (data.overlay) { nv.setOpacity(nv.volumes.length - 1, Number(opacity.value)); nv.updateGLVolume(); }
  });
  note.textContent = "Showing T1C with the lesion label map in red.";
  document.body.dataset.viewer = "ready";
  return nv;
}

function jumpTo(nv, lesion) {
  if (!nv || lesion.centroid_ras == null) return;
  nv.scene.crosshairPos = nv.mm2frac(lesion.centroid_ras);
  nv.drawScene();
  nv.createOnLocationChange && nv.createOnLocationChange();
  document.getElementById("viewer-note").textContent = `At ${lesion.roi_name} (RAS ${lesion.centroid_ras.map((v) => v.toFixed(1)).join(", ")} mm)`;
}

function decisionControls(caseId, roiNumber, saved) {
  const select = el("select", {class: "rating", "data-case": caseId, "data-roi": roiNumber == null ? "" : roiNumber},
    el("option", {value: ""}, "—"), el("option", {value: "pass"}, "pass"), el("option", {value: "fail"}, "fail"));
  const comment = el("input", {type: "text", class: "comment", placeholder: "comment", size: "30"});
  if (saved) { select.value = saved.rating; comment.value = saved.comment || ""; }
  return [select, comment];
}

async function initCase() {
  const data = pageData();
  const decisions = await loadDecisions();
  const caseControls = decisionControls(data.case_id, null, decisions[data.case_id + "|"]);
  document.getElementById("case-decision").append("Case: ", ...caseControls);
  const rows = document.querySelectorAll("#lesions tbody tr");
  const controls = [caseControls];
  let nv = null;
  rows.forEach((tr, i) => {
    const lesion = data.lesions[i];
    const pair = decisionControls(data.case_id, lesion.roi_number, decisions[data.case_id + "|" + lesion.roi_number]);
    controls.push(pair);
    tr.querySelector(".decision").append(...pair);
    tr.querySelector(".jump").addEventListener("click", () => jumpTo(nv, lesion));
  });
  const status = document.getElementById("save-status");
  document.getElementById("save").addEventListener("click", async () => {
    const now = new Date().toISOString();
    const list = controls.filter(([s]) => s.value).map(([s, c]) => ({
      case_id: s.dataset.case, roi_number: s.dataset.roi === "" ? null : Number(s.dataset.roi),
      rating: s.value, comment: c.value, reviewed_at: now,
    }));
    if (!list.length) { status.textContent = "Choose pass or fail first."; return; }
    await saveDecisions(list, status);
    const link = document.getElementById("download");
    if (link) link.remove();
    document.getElementById("save-row").append(downloadLink(Object.assign(await loadDecisions(), localDecisions())));
  });
  document.body.dataset.ready = "1";
  try { nv = await initViewer(data); } catch (e) {
    document.getElementById("viewer-note").textContent = "The viewer could not start: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "index") initIndex();
  else if (document.body.dataset.page === "case") initCase();
});
