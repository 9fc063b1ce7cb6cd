// The contract between the Python model (skyward/jupyter/panel) and the views.

export interface ClusterSummary {
  id: string;
  name: string;
  provider: string;
  state: string;
  nodes: number;
  requested_at: number | null;
  ready_at: number | null;
  ended_at: number | null;
  price_per_hour: number;
}

export interface NodeSummary {
  node: number;
  instance_id: string;
  state: string;
  phase: string;
  address: string;
  spot: boolean;
  accelerator: string;
  instance_type: string;
  price_per_hour: number;
  started_at: number | null;
  ended_at: number | null;
  task: string;
  note: string;
  metrics: string[];
}

export interface ErrorSummary {
  message: string;
  fatal: boolean;
  at: number;
}

/** The `summary` trait: everything but log rows and metric points. */
export interface Summary {
  cluster: ClusterSummary;
  nodes: NodeSummary[];
  errors: ErrorSummary[];
  /** The kernel's clock (epoch seconds) when this summary was made. */
  now: number;
}

/** A row of a node's log: [row number, stream, text]. */
export type LogRow = [number, string, string];

/** Custom message from the kernel; metric points are its one binary buffer. */
export interface SyncMessage {
  kind: "delta" | "snapshot";
  seq: number;
  /** Rows of the nodes whose pane is open; `whole`: every row kept, replacing ours. */
  logs: Record<string, { first: number; rows: LogRow[]; whole?: boolean }>;
  metrics: boolean;
}

/** Messages a view sends to the kernel. */
export type ToKernel =
  | { kind: "hello"; lab: boolean }
  | { kind: "snapshot" }
  | { kind: "panes"; client: string; nodes: number[] }
  | { kind: "shutdown" }
  | { kind: "interrupt" };

/** The part of anywidget's model API the panel uses. */
export interface PanelModel {
  get(name: "summary"): Summary;
  get(name: "subshells"): boolean | null;
  get(name: "panel_id"): string;
  on(event: string, callback: (...args: any[]) => void): void;
  off(event: string, callback?: (...args: any[]) => void): void;
  send(content: ToKernel, callbacks?: unknown, buffers?: ArrayBuffer[]): void;
}
