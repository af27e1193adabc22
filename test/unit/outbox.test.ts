// Distributed.sendTo keeps messages for a node in order while its link is being dialled, tries
// a failed dial again while the node is alive, and drops (with a log line) only for a node that
// is dead or never heard of. The agent around it is left out: linkTo is replaced by a stub
// that fails a given number of times, and the view is a plain map.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Distributed } from "../../agent/node/distributed.js";

function fakeNet(failures: number, alive: boolean | undefined) {
  const sent: string[] = [];
  let dials = 0;
  const link = { closed: false, send: (m: { t: string; n?: number }) => sent.push(`${m.t}${m.n ?? ""}`) };
  const net = Object.create(Distributed.prototype) as any;
  Object.assign(net, {
    links: new Map(),
    outbox: new Map(),
    stopped: false,
    view: new Map(alive === undefined ? [] : [["B", { nodeId: "B", alive }]]),
    linkTo: async () => {
      dials++;
      if (dials <= failures) throw new Error("connection refused");
      (net.links as Map<string, unknown>).set("B", link);
      return link;
    },
  });
  return { net: net as Distributed, sent, dials: () => dials };
}
const until = async (cond: () => boolean, ms = 5000) => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe("sendTo's outbox", () => {
  it("keeps order through failed dials while the node is alive, then sends on the link directly", async () => {
    const { net, sent, dials } = fakeNet(3, true);
    for (let n = 0; n < 5; n++) net.sendTo("B", { t: "free", n } as any);
    await until(() => sent.length === 5);
    assert.deepEqual(sent, ["free0", "free1", "free2", "free3", "free4"]);
    assert.equal(dials(), 4);
    net.sendTo("B", { t: "sub", n: 5 } as any);
    assert.deepEqual(sent.at(-1), "sub5", "with a link up a message goes out at once");
    assert.equal(dials(), 4);
  });

  it("drops, and says so, for a node known dead", async () => {
    const { net, sent } = fakeNet(Infinity, false);
    const logged: string[] = [];
    const orig = console.error;
    console.error = (s: string) => logged.push(s);
    try {
      net.sendTo("B", { t: "result" } as any);
      await until(() => !(net as any).outbox.has("B"));
    } finally {
      console.error = orig;
    }
    assert.deepEqual(sent, []);
    assert.match(logged.join("\n"), /dropped 1 message\(s\) for node B \(result\): connection refused/);
  });

  it("waits for a node it has not heard of yet (its view may be on the way)", async () => {
    const { net, sent } = fakeNet(2, undefined);
    net.sendTo("B", { t: "actorState" } as any);
    await until(() => sent.length === 1);
    assert.deepEqual(sent, ["actorState"]);
  });
});
