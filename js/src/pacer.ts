// Redraws that data asks for, spaced in time: the view and its panes draw on animation
// frames, but what a person can take in changes far less often than a flood arrives.

/** Spaces the redraws that new data asks for at least `interval` ms apart. */
export class RedrawPacer {
  private last = -Infinity;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** `wake` asks for a frame again once a redraw that had to wait is due. */
  constructor(
    readonly interval: number,
    private wake: () => void,
  ) {}

  /** Whether a redraw may happen `now`; if not, `wake` is called when it may. */
  due(now: number): boolean {
    const wait = this.last + this.interval - now;
    if (wait <= 0) return true;
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.wake();
    }, wait);
    return false;
  }

  drew(now: number): void {
    this.last = now;
  }

  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
