// A node's link to the head (agent/cluster/membership.ts) against a stand-in head.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { acceptPeers, HeadConnection, NodeTable } from "../../agent/cluster/membership.js";
import type { ClusterMsg, NodeView } from "../../src/protocol/cluster.js";

const view = (id: string, isHead = false): NodeView => ({
  nodeId: id, name: id, nodeType: "t", ip: "127.0.0.1", port: 1, isHead, alive: true,
  total: { CPU: 1 }, available: { CPU: 1 }, queued: 0, lastSeen: 0,
});

test("a node handles what the head sends as it registers the node (its view), not only what comes after the reply", async () => {
  const token = "t0ken";
  const table = new NodeTable();
  table.register(view("head", true));
  const server = http.createServer();
  // As the real head does: registering a node broadcasts the view (to that node too), then replies.
  const onUpgrade = acceptPeers(server, token, (link) => {
    link.onMessage = (m) => {
      if (m.t !== "register") return;
      table.register(m.node, link);
      table.broadcast();
      link.reply(m.rid!, true);
    };
  });
  server.on("upgrade", (req, socket, h) => onUpgrade(req, socket, h) || socket.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const hc = new HeadConnection(`ws://127.0.0.1:${port}/peer`, token, () => view("n1"), () => ({ available: {}, queued: 0 }));
  const got: ClusterMsg[] = [];
  hc.onLink = (l) => (l.onMessage = (m) => got.push(m));
  try {
    await hc.start();
    const v = got.find((m) => m.t === "view") as Extract<ClusterMsg, { t: "view" }> | undefined;
    assert.ok(v, "the view sent while registering reached the node");
    assert.deepEqual(v.nodes.map((n) => n.nodeId).sort(), ["head", "n1"]);
  } finally {
    hc.stop();
    for (const l of table.links.values()) l.close();
    server.close();
  }
});
