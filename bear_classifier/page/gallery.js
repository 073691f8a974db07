// The bar above the answer cards (kernel side: gallery.py): "Your photos (5)" with "Clear"; after
// Clear, "Cleared 5 photos." with "Undo" for a few seconds. Focus never falls to the page: Clear hands
// it to Undo, and when Undo goes away it goes to the upload button.

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const photos = (n) => (n === 1 ? "1 photo" : `${n} photos`);

function render({ model, el }) {
  const heading = element("h2", { className: "bear-gallery-heading" });
  const clear = element("button", { type: "button", className: "bear-button bear-clear", textContent: "Clear" });
  const cleared = element("span", { className: "bear-cleared" });
  const undo = element("button", { type: "button", className: "bear-button bear-undo-clear", textContent: "Undo" });
  const undoRow = element("div", { className: "bear-gallery-undo" }, cleared, undo);
  el.classList.add("bear-gallery-bar");
  el.append(element("div", { className: "bear-gallery-row" }, heading, clear), undoRow);

  const show = () => {
    const count = model.get("count"), gone = model.get("cleared");
    heading.textContent = `Your photos (${count})`;
    heading.parentElement.hidden = count === 0;
    cleared.textContent = gone ? `Cleared ${photos(gone)}.` : "";
    const hadFocus = document.activeElement === undo;
    undoRow.hidden = gone === 0;
    if (hadFocus && undoRow.hidden) {
      // Undo has run out (or was used): the next thing a visitor does is give more photos, or look at them.
      (count ? heading : document.querySelector(".bear-input button.bear-upload"))?.focus();
    }
  };
  heading.tabIndex = -1; // focus lands on it after an undo, so a screen reader says how many came back
  clear.addEventListener("click", () => { model.send({ kind: "clear" }); });
  undo.addEventListener("click", () => { model.send({ kind: "undo" }); });
  model.on("change:cleared", () => {
    show();
    if (model.get("cleared") && (document.activeElement === clear || document.activeElement === document.body)) {
      undo.focus();
    }
  });
  model.on("change:count", show);
  show();
}

export default { render };
