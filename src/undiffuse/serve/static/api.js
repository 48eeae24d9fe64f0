"use strict";
// The API reference: every endpoint of /openapi.json with its summary and body fields (no CDN, no framework).
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text) e.textContent = text; if (cls) e.className = cls; return e; };

function schemaOf(spec, ref) { return ref && ref.$ref ? spec.components.schemas[ref.$ref.split("/").pop()] : ref; }

function fields(spec, op) {
  const content = (op.requestBody || {}).content || {};
  const [type, media] = Object.entries(content)[0] || [];
  const schema = media && schemaOf(spec, media.schema);
  if (!schema || !schema.properties) return null;
  const t = el("table");
  const head = t.insertRow(); ["field", "type", "default", "meaning"].forEach((h) => head.appendChild(el("th", h)));
  for (const [name, p] of Object.entries(schema.properties)) {
    const types = p.type || (p.anyOf || []).map((a) => a.type || a.format).filter(Boolean).join(" | ");
    const row = t.insertRow();
    [name, types, p.default === undefined ? "" : JSON.stringify(p.default), p.description || p.title || ""].forEach((c) => (row.insertCell().textContent = c));
  }
  const box = el("div"); box.appendChild(el("p", `body: ${type}`, "muted small")); box.appendChild(t);
  return box;
}

async function render() {
  const spec = await (await fetch("/openapi.json")).json(), root = document.getElementById("endpoints");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const sec = el("section", null, "endpoint");
      const h = el("h3"); h.appendChild(el("span", method.toUpperCase(), `method ${method}`)); h.appendChild(el("code", path));
      sec.appendChild(h); sec.appendChild(el("p", op.summary || ""));
      const f = fields(spec, op); if (f) sec.appendChild(f);
      root.appendChild(sec);
    }
  }
  document.body.dataset.ready = "1";
}

render();
