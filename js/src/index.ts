// The panel's anywidget module: `initialize` once per model (the store, its messages),
// `render` once per view (inline, or in the sidebar).

import { PanelStore } from "./store";
import type { PanelModel, Summary, SyncMessage } from "./types";
import { PanelView } from "./view";
import "./panel.css";

// anywidget hands `initialize` and each `render` a different proxy of the same model, so
// the store is found by the model's own `panel_id` trait (and kept on globalThis, in case
// the module is evaluated twice in one page).
const stores: Map<string, PanelStore> = ((globalThis as any).__skywardPanelStores ??= new Map());

function storeOf(model: PanelModel): PanelStore {
  const id = String(model.get("panel_id") || "default");
  let store = stores.get(id);
  if (!store) {
    store = new PanelStore();
    store.setSummary(model.get("summary") as Summary);
    stores.set(id, store);
  }
  return store;
}

function isLab(): boolean {
  return Boolean(document.querySelector(".jp-LabShell"));
}

function initialize({ model }: { model: PanelModel }): () => void {
  const controller = new AbortController();
  const store = storeOf(model);
  let asked = 0;
  const askSnapshot = () => {
    const now = Date.now();
    if (now - asked < 1000) return;
    asked = now;
    model.send({ kind: "snapshot" });
  };
  const onSummary = () => store.setSummary(model.get("summary"));
  const onMessage = (msg: SyncMessage, buffers?: DataView[]) => {
    if (!msg || (msg.kind !== "delta" && msg.kind !== "snapshot")) return;
    if (!store.apply(msg, buffers as unknown as ArrayBuffer[])) askSnapshot();
  };
  model.on("change:summary", onSummary);
  model.on("msg:custom", onMessage);
  model.send({ kind: "hello", lab: isLab() });
  // The kernel sends log rows only for the panes open here.
  store.onPanes = (nodes) => model.send({ kind: "panes", client: store.client, nodes });
  if (store.openPanes().length) store.onPanes(store.openPanes());
  controller.signal.addEventListener("abort", () => {
    try {
      store.onPanes = null;
      model.off("change:summary", onSummary);
      model.off("msg:custom", onMessage);
    } catch (err) {
      console.error("[skyward] model cleanup failed", err);
    }
  });
  return () => {
    controller.abort();
    stores.delete(String(model.get("panel_id") || "default"));
  };
}

function render({ model, el }: { model: PanelModel; el: HTMLElement }): () => void {
  const controller = new AbortController();
  const store = storeOf(model);
  new PanelView(model, store, el, controller.signal);
  // A view that mounts late (the sidebar) asks for everything it missed.
  model.send({ kind: "snapshot" });
  return () => {
    try {
      controller.abort();
    } catch (err) {
      console.error("[skyward] view cleanup failed", err);
    }
  };
}

export default { initialize, render };
