// cotsurvival viewer: chain text shrinking over pruning steps. No network, no innerHTML for chain text.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("cs-data").textContent);
  const $ = (id) => document.getElementById(id);
  const chainSelect = $("chain"), orderingSelect = $("ordering"), slider = $("step");
  const strike = $("strike"), textBox = $("text"), status = $("status");
  let chain = null, spans = [];

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function rgba(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }

  function colour(name) {
    return DATA.colours[name] || "#BBBBBB";
  }

  function fmt(x) {
    return x === null || x === undefined ? "—" : Number(x).toFixed(3);
  }

  function buildLegend() {
    const legend = $("legend");
    for (const name of DATA.categories) {
      const item = el("span", DATA.display[name] || name, "swatch");
      item.style.background = rgba(colour(name), 0.5);
      legend.appendChild(item);
    }
  }

  function buildChainList() {
    DATA.chains.forEach((c, i) => {
      chainSelect.appendChild(new Option(`${c.id} (${c.n} tokens)`, String(i)));
    });
  }

  function selectChain(i) {
    chain = DATA.chains[i];
    orderingSelect.replaceChildren();
    for (const name of Object.keys(chain.orderings)) orderingSelect.appendChild(new Option(name, name));
    slider.max = String(chain.steps);
    slider.value = "0";
    $("question").textContent = chain.question;
    textBox.replaceChildren();
    spans = chain.seg.map((seg, pos) => {
      // Leading whitespace stays uncoloured (so neighbours stay apart) but hides with its token.
      const lead = seg.match(/^\s*/)[0], core = seg.slice(lead.length);
      const span = el("span", undefined, "tok");
      span.dataset.position = String(pos);
      if (chain.tie && chain.tie[pos] !== null) span.classList.add("tie");
      // a reasoning unit (sentence or line) begins here: the units `cotsurvival resample` cuts at
      if (chain.unit && pos > 0 && chain.unit[pos] !== chain.unit[pos - 1]) span.classList.add("unit-start");
      if (lead) span.appendChild(document.createTextNode(lead));
      const box = el("span", core || (lead ? "" : "\u200b"), "core");
      box.style.background = rgba(colour(chain.category[pos]), 0.45);
      span.appendChild(box);
      textBox.appendChild(span);
      return span;
    });
    if (chain.tail) textBox.appendChild(el("span", chain.tail, "tail"));
    render();
  }

  function render() {
    const s = Number(slider.value), ordering = orderingSelect.value || "greedy";
    const order = chain.orderings[ordering];
    const greedy = chain.orderings.greedy;
    // Traces are the greedy candidates before step s + 1, listed in position order of greedy survivors.
    const costs = ordering === "greedy" && s < chain.steps && chain.costs ? chain.costs[s] : null;
    let kept = 0, slot = 0;
    spans.forEach((span, pos) => {
      const step = order[pos];
      const gone = step !== null && step <= s;
      const aliveGreedy = greedy[pos] === null || greedy[pos] > s;
      const cost = costs && aliveGreedy ? costs[slot] : null;
      if (aliveGreedy) slot += 1;
      span.classList.toggle("gone", gone);
      span.classList.toggle("next", step === s + 1);
      if (!gone) kept += 1;
      const deleted = step === null ? "kept to the end" : `deleted at step ${step}`;
      const costText = ordering !== "greedy" ? "n/a (traces follow the greedy order)"
        : gone ? "— (deleted)" : costs ? fmt(cost) : "— (last step)";
      const tie = chain.tie && chain.tie[pos] !== null ? ` · near-tie deletion (gap ${fmt(chain.tie[pos])} nats)` : "";
      const unit = chain.unit && chain.unit[pos] >= 0 ? ` · unit ${chain.unit[pos] + 1}` : "";
      span.title = `${JSON.stringify(chain.text[pos])}${unit} · ${chain.label[pos] || "untagged"} · ${deleted} · cost at step ${s + 1}: ${costText}${tie}`;
    });
    textBox.classList.toggle("strike", strike.checked);
    const objective = ordering === "greedy" ? ` · objective ${fmt(chain.objective[s])}` : "";
    status.textContent = `step ${s} / ${chain.steps} · visible tokens: ${kept} of ${chain.n}${objective}`;
    status.dataset.visible = String(kept);
  }

  buildLegend();
  buildChainList();
  chainSelect.addEventListener("change", () => selectChain(Number(chainSelect.value)));
  orderingSelect.addEventListener("change", render);
  slider.addEventListener("input", render);
  strike.addEventListener("change", render);
  $("run-note").textContent = DATA.run.note;
  for (const text of DATA.run.scoring_notes || []) {  // textContent: the notes are never parsed as HTML
    const item = document.createElement("li");
    item.textContent = text;
    $("scoring-notes").appendChild(item);
  }
  if (DATA.chains.length) selectChain(0);
})();
