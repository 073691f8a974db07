// One answer card (an anywidget ES module; its kernel side is card.py). The verdict comes first, the
// photo after it on a phone (app.css lays the grid out), then the lesson's line, every class's bar,
// "Where it looked" and "That's wrong". Nothing here is a live region: the app's status line is the
// page's only one.

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function jpegUrl(view) {
  return view && view.byteLength ? URL.createObjectURL(new Blob([view], { type: "image/jpeg" })) : "";
}

let serial = 0; // radio groups need page-wide unique names

function bars(model) {
  return element("div", { className: "bear-bars" }, ...model.get("bars").map(([words, p, shown]) => {
    const fill = element("span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    return element("div", { className: "bear-bar" },
      element("span", { className: "bear-bar-label", textContent: words }),
      element("span", { className: "bear-bar-track", ariaHidden: "true" }, fill),
      element("span", { className: "bear-bar-value", textContent: shown }));
  }));
}

function mapTools(model, img, urls) {
  // "Where it looked": a pressed/unpressed button that swaps the photo for the lit one, with its legend in sight.
  const tools = [];
  if (urls.overlay) {
    const button = element("button", { type: "button", className: "bear-button bear-looked", textContent: "Where it looked" });
    const legend = element("figcaption", { className: "bear-note bear-legend", textContent: model.get("legend") });
    const show = () => {
      const on = model.get("looked");
      button.setAttribute("aria-pressed", String(on));
      img.src = on ? urls.overlay : urls.photo;
      img.alt = on ? `Where the model looked in ${model.get("name")}` : `Your photo: ${model.get("name")}`;
      legend.hidden = !on;
    };
    button.addEventListener("click", () => { model.set("looked", !model.get("looked")); model.save_changes(); show(); });
    show();
    tools.push(button);
    return [tools, legend];
  }
  return [tools, model.get("no_map") ? element("p", { className: "bear-note bear-no-map", textContent: model.get("no_map") }) : ""];
}

function correction(model) {
  // "That's wrong": the other answers as a labelled radio group; the choice is stored at once, can be
  // changed, and taken back with Undo for as long as the card is there.
  const choices = model.get("choices");
  if (!choices.length) { return [null, ""]; }
  const group = `bear-choice-${++serial}`;
  const wrong = element("button", { type: "button", className: "bear-button bear-wrong", textContent: "That's wrong" });
  wrong.setAttribute("aria-expanded", "false");
  const radios = choices.map(([label, words]) => element("input", { type: "radio", name: group, value: label }));
  const fieldset = element("fieldset", { className: "bear-choices", hidden: true },
    element("legend", { textContent: "What is it really?" }),
    ...choices.map(([, words], i) => element("label", { className: "bear-choice" }, radios[i], ` ${words}`)));
  const reply = element("p", { className: "bear-note bear-reply" });
  const undo = element("button", { type: "button", className: "bear-button bear-undo", textContent: "Undo", hidden: true });
  const note = element("p", { className: "bear-note", textContent:
    "Your answer and this photo (without its metadata) will be kept to improve the model." });
  const panel = element("div", { className: "bear-correction" }, fieldset, note, element("div", { className: "bear-reply-row" }, reply, undo));
  panel.hidden = true;

  const show = () => {
    const chosen = model.get("chosen");
    radios.forEach((radio) => { radio.checked = radio.value === chosen; });
    reply.textContent = model.get("reply");
    undo.hidden = !chosen;
    note.hidden = Boolean(chosen || model.get("reply")); // after "Undo" its reply alone: nothing is kept
    if (chosen || model.get("reply")) { open(false); }
  };
  const open = (focus) => {
    panel.hidden = fieldset.hidden = false;
    wrong.setAttribute("aria-expanded", "true");
    if (focus) { (radios.find((r) => r.checked) || radios[0]).focus(); }
  };
  wrong.addEventListener("click", () => {
    if (panel.hidden) { open(true); return; }
    panel.hidden = true;
    wrong.setAttribute("aria-expanded", "false");
  });
  radios.forEach((radio) => radio.addEventListener("change", () => {
    if (radio.checked) { model.send({ kind: "flag", label: radio.value }); }
  }));
  undo.addEventListener("click", () => { model.send({ kind: "unflag" }); radios[0].focus(); });
  model.on("change:chosen", show);
  model.on("change:reply", show);
  show();
  return [wrong, panel];
}

function render({ model, el }) {
  const name = model.get("name");
  const title = element("h3", { className: "bear-card-name", textContent: model.get("short"), title: name });
  if (model.get("short") !== name) { title.setAttribute("aria-label", name); }
  const card = element("article", { className: "bear-card" });
  card.setAttribute("aria-label", name);
  el.append(card);
  if (model.get("error")) {
    card.classList.add("bear-card-error");
    card.append(element("div", { className: "bear-card-head" }, title,
      element("p", { className: "bear-error", textContent: model.get("error") })));
    return () => {};
  }
  const urls = { photo: jpegUrl(model.get("photo")), overlay: jpegUrl(model.get("overlay")) };
  const img = element("img", { className: "bear-thumb", src: urls.photo, alt: `Your photo: ${name}` });
  const [mapButtons, legend] = mapTools(model, img, urls);
  const [wrong, panel] = correction(model);
  const verdict = element("p", { className: "bear-verdict", textContent: model.get("verdict") });
  if (model.get("unsure")) { verdict.classList.add("bear-unsure"); }
  card.append(
    element("div", { className: "bear-card-head" }, title, verdict,
      model.get("sentence") ? element("p", { className: "bear-sentence", textContent: model.get("sentence") }) : ""),
    element("figure", { className: "bear-figure" }, img, legend),
    element("div", { className: "bear-card-body" },
      element("p", { className: "bear-answer", textContent: model.get("lesson") }), bars(model),
      model.get("version") ? element("p", { className: "bear-note bear-model-version", textContent: `Model version ${model.get("version")}` }) : "",
      element("div", { className: "bear-tools" }, ...mapButtons, ...(wrong ? [wrong] : [])), panel));
  // The visitor's newest photo: on a phone its card can land below the fold (photo_input.js marks when one was sent).
  if (window.bearScrollToNext) {
    window.bearScrollToNext = false;
    requestAnimationFrame(() => {
      const box = card.getBoundingClientRect();
      if (box.top > window.innerHeight * 0.7 || box.bottom < 0) { card.scrollIntoView({ block: "start" }); }
    });
  }
  return () => { URL.revokeObjectURL(urls.photo); if (urls.overlay) { URL.revokeObjectURL(urls.overlay); } };
}

export default { render };
