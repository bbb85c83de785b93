// The sample browser of report.html: plain JavaScript, no libraries, no network.
// Data: the JSON of the element #tw-samples (a script tag of type application/json), read with
// JSON.parse (never evaluated). Every piece of scenario text is written with textContent, never as HTML.
// Filters: one <select> per field; the URL fragment (#arm=reasoning&family=leak) sets them on load and
// follows every change, so a filtered view can be linked to; sample=<row index> opens that sample.
(function () {
  "use strict";
  window.addEventListener("error", function (e) {
    document.body.setAttribute("data-js-error", String(e.message || e));
  });

  var PAGE = 200;
  var data = JSON.parse(document.getElementById("tw-samples").textContent);
  var rows = data.rows;
  var fields = data.fields;          // [{key, label}]
  var columns = data.columns;        // [{key, label, num}]
  var selects = {};
  var shown = PAGE;
  var selected = null;

  var filtersEl = document.getElementById("sb-filters");
  var statusEl = document.getElementById("sb-status");
  var bodyEl = document.getElementById("sb-body");
  var moreEl = document.getElementById("sb-more");
  var detailEl = document.getElementById("sb-detail");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function str(v) {
    if (v === null || v === undefined) return "none";
    if (v === true) return "yes";
    if (v === false) return "no";
    return String(v);
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "n/a";
    if (typeof v === "number") return v.toFixed(digits === undefined ? 3 : digits);
    return str(v);
  }

  // -- filters -----------------------------------------------------------------------------------
  fields.forEach(function (f) {
    var seen = {};
    rows.forEach(function (r) { seen[str(r[f.key])] = r[f.key]; });
    var values = Object.keys(seen).sort(function (a, b) {
      var x = seen[a], y = seen[b];
      if (typeof x === "number" && typeof y === "number") return x - y;
      return a < b ? -1 : a > b ? 1 : 0;
    });
    var label = el("label", "sb-filter");
    label.appendChild(el("span", null, f.label));
    var s = el("select");
    s.name = f.key;
    s.id = "sb-f-" + f.key;
    s.appendChild(new Option("all", ""));
    values.forEach(function (v) { s.appendChild(new Option(v, v)); });
    s.addEventListener("change", function () { shown = PAGE; writeHash(); render(); });
    label.appendChild(s);
    filtersEl.appendChild(label);
    selects[f.key] = s;
  });

  var notes = el("div", "sb-note");
  filtersEl.appendChild(notes);

  // The fragment is read by hand, not with URLSearchParams: that would turn the "+" of an arm named
  // "documents+fiction" into a space.
  function parseHash() {
    var out = {};
    window.location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) return;
      var i = part.indexOf("=");
      var k = i < 0 ? part : part.slice(0, i), v = i < 0 ? "" : part.slice(i + 1);
      try { k = decodeURIComponent(k); v = decodeURIComponent(v); } catch (e) { /* keep it raw */ }
      out[k] = v;
    });
    return out;
  }

  function readHash() {
    var params = parseHash();
    var unknown = [];
    fields.forEach(function (f) {
      var s = selects[f.key];
      if (!Object.prototype.hasOwnProperty.call(params, f.key)) { s.value = ""; return; }
      var want = params[f.key];
      var ok = Array.prototype.some.call(s.options, function (o) { return o.value === want; });
      if (ok) s.value = want;
      else { s.value = ""; unknown.push(f.key + "=" + want); }
    });
    var idx = Object.prototype.hasOwnProperty.call(params, "sample") ? Number(params.sample) : NaN;
    if (params.sample !== undefined && !(idx >= 0 && idx < rows.length && Math.floor(idx) === idx)) {
      unknown.push("sample=" + params.sample);
      idx = NaN;
    }
    selected = isNaN(idx) ? null : idx;
    notes.textContent = unknown.length
      ? "Not in these samples, so not applied: " + unknown.join(", ") : "";
  }

  function writeHash() {
    var parts = [];
    fields.forEach(function (f) {
      var v = selects[f.key].value;
      if (v !== "") parts.push(encodeURIComponent(f.key) + "=" + encodeURIComponent(v));
    });
    if (selected !== null) parts.push("sample=" + selected);
    var url = window.location.href.split("#")[0] + (parts.length ? "#" + parts.join("&") : "");
    try { window.history.replaceState(null, "", url); } catch (e) { /* some browsers refuse it on file:// */ }
  }

  function matches(r) {
    for (var i = 0; i < fields.length; i++) {
      var v = selects[fields[i].key].value;
      if (v !== "" && str(r[fields[i].key]) !== v) return false;
    }
    return true;
  }

  // -- fit -----------------------------------------------------------------------------------------
  // Cells wrap at spaces; a table still wider than its container (long ids in a narrow window) gets
  // class "tight", which lets its words break anywhere, so no table overflows the page.
  function fitTables() {
    Array.prototype.forEach.call(document.querySelectorAll("main table"), function (t) {
      t.classList.remove("tight");
      if (t.getBoundingClientRect().width > t.parentElement.clientWidth + 1) t.classList.add("tight");
    });
  }

  // -- table -------------------------------------------------------------------------------------
  function render() {
    var hits = [];
    for (var i = 0; i < rows.length; i++) if (matches(rows[i])) hits.push(i);
    bodyEl.textContent = "";
    var n = Math.min(shown, hits.length);
    for (var j = 0; j < n; j++) {
      var r = rows[hits[j]];
      var tr = el("tr");
      tr.setAttribute("data-index", String(hits[j]));
      fields.forEach(function (f) { tr.setAttribute("data-" + f.key.replace(/_/g, "-"), str(r[f.key])); });
      if (r.harmful) tr.className = "sb-harmful";
      if (hits[j] === selected) tr.className += " sb-selected";
      columns.forEach(function (c) {
        tr.appendChild(el("td", c.num ? "num" : null, c.num ? fmt(r[c.key]) : str(r[c.key])));
      });
      tr.addEventListener("click", onRowClick);
      bodyEl.appendChild(tr);
    }
    statusEl.textContent = hits.length + " of " + rows.length + " samples match" +
      (hits.length > n ? "; showing the first " + n : "");
    statusEl.setAttribute("data-matching", String(hits.length));
    statusEl.setAttribute("data-shown", String(n));
    moreEl.hidden = hits.length <= n;
    moreEl.textContent = "Show " + Math.min(PAGE, hits.length - n) + " more";
    fitTables();
  }

  moreEl.addEventListener("click", function () { shown += PAGE; render(); });

  function onRowClick(ev) {
    var tr = ev.currentTarget;
    selected = Number(tr.getAttribute("data-index"));
    Array.prototype.forEach.call(bodyEl.querySelectorAll("tr.sb-selected"), function (t) {
      t.classList.remove("sb-selected");
    });
    tr.classList.add("sb-selected");
    writeHash();
    showDetail(rows[selected]);
  }

  // -- one sample --------------------------------------------------------------------------------
  function showDetail(r) {
    detailEl.textContent = "";
    detailEl.hidden = false;
    detailEl.appendChild(el("h3", null, r.scenario_id + " \u2014 " + r.cell_id + " (" + r.eval + ")"));
    var meta = el("p", "sb-meta");
    meta.textContent = "arm " + str(r.arm) + ", budget " + str(r.budget) + ", seed " + str(r.seed) +
      ", stage " + str(r.stage) + "; family " + str(r.family) + (r.held_out ? " (held out of training)" : "") +
      "; condition " + str(r.condition) + "; P(harmful) " + fmt(r.p_harmful) + "; top choice " +
      str(r.top) + (r.harmful ? " (harmful)" : " (not harmful)") + (r.scoring ? "; scoring " + r.scoring : "");
    detailEl.appendChild(meta);

    detailEl.appendChild(el("h4", null, "Prompt"));
    var prompt = data.prompts[r.prompt] || [];
    if (!prompt.length) detailEl.appendChild(el("p", "sb-meta", "No prompt recorded for this sample."));
    prompt.forEach(function (m) {
      var box = el("div", "sb-msg sb-role-" + String(m.role).replace(/[^a-z]/g, ""));
      box.appendChild(el("div", "sb-role", m.role));
      box.appendChild(el("pre", null, m.content));
      detailEl.appendChild(box);
    });

    detailEl.appendChild(el("h4", null, "Candidates"));
    var cands = data.candidates[r.candidates] || [];
    if (!cands.length) { detailEl.appendChild(el("p", "sb-meta", "No candidates recorded.")); return; }
    var t = el("table", "sb-cands");
    var head = el("tr");
    ["", "id", "label", "score", "text"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    var thead = el("thead");
    thead.appendChild(head);
    t.appendChild(thead);
    var tb = el("tbody");
    cands.forEach(function (c, i) {
      var tr = el("tr", c.label === "harmful" ? "sb-harmful" : null);
      var isTop = c.id === r.top;
      tr.appendChild(el("td", null, isTop ? "top" : ""));
      tr.appendChild(el("td", null, c.id));
      tr.appendChild(el("td", null, c.label));
      tr.appendChild(el("td", "num", fmt(r.scores ? r.scores[i] : null, 4)));
      var td = el("td");
      td.appendChild(el("pre", null, c.text));
      tr.appendChild(td);
      tb.appendChild(tr);
    });
    t.appendChild(tb);
    detailEl.appendChild(t);
    fitTables();
  }

  function load() {
    shown = PAGE;
    readHash();
    render();
    if (selected !== null) showDetail(rows[selected]);
    else { detailEl.hidden = true; detailEl.textContent = ""; }
  }

  load();
  window.addEventListener("hashchange", load);
  window.addEventListener("resize", fitTables);
  document.body.setAttribute("data-ready", "1");
})();
