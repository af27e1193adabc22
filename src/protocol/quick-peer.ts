// Spin, then block, for one-at-a-time request and response over a socket: an actor call and
// its reply. (Not a leased worker's tasks: those mostly come pipelined, several workers to one
// submitter, and polling workers would sit on the cores the submitter and its agent need.)
// On this kind of machine the costly part of a round trip is not the bytes but the wake-up:
// the kernel waking a process asleep in epoll (a cross-CPU interrupt, which a VM pays dearly)
// and the scheduler running it. A side
// that expects its peer back within microseconds polls the socket for a bounded moment before
// it goes back to its event loop to sleep; the peer's write then finds it awake, and the event
// loop finds the bytes waiting. A frame echo between two processes here: 17k round trips/s,
// 22k with the answering side polling 50 µs, 30-34k with both sides.
//
// Adaptive, so it costs nothing where it does not pay: a side polls only while its peer came
// back within GATE_US the last time (a caller that thinks between calls, a method that runs
// for a millisecond: no polling), and at most its budget each time. TRAY_SPIN_US=0 turns it
// off (a machine shared with work that needs every cycle); another value sets the budget.
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { native, socketFd } from "../runtime/native.js";

/** µs a side polls for its peer at most, per wait. */
const BUDGET_US = Number(process.env.TRAY_SPIN_US ?? 60);
/** A peer counts as quick when it came back within this many µs the last time. */
const GATE_US = 250;

export class QuickPeer {
  private waitingSince = 0;
  private quick = false;

  constructor(private readonly socket: Socket) {}

  /** Whether the next wait() polls: the peer was quick last time, and polling is on. */
  get polling(): boolean {
    return this.quick && !QuickPeer.off;
  }

  /** Polling is off (TRAY_SPIN_US=0) or impossible (no native helpers). */
  static get off(): boolean {
    return !(BUDGET_US > 0) || !native();
  }

  /** The peer's message arrived: was it quick? */
  arrived(): void {
    if (this.waitingSince === 0) return;
    this.quick = (performance.now() - this.waitingSince) * 1000 <= GATE_US;
    this.waitingSince = 0;
  }

  /**
   * Everything of ours is sent and we wait for the peer: poll its socket for a moment if it
   * has been quick. Returns at once when bytes are already there.
   */
  wait(): void {
    this.waitingSince = performance.now();
    if (!this.polling) return;
    const fd = socketFd(this.socket);
    if (fd !== undefined) native()!.spinReadable(fd, BUDGET_US);
  }
}
