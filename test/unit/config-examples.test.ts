// Every example in cluster-configs/ must load as shipped. Their keys live at ~/.ssh/id_ed25519,
// so HOME points at a temp folder that holds a key pair: the existence check itself is unchanged.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { loadClusterConfig } from "../../src/config/index.js";

const home = mkdtempSync(join(tmpdir(), "tray-config-home-"));
mkdirSync(join(home, ".ssh"));
writeFileSync(join(home, ".ssh", "id_ed25519"), "-----BEGIN OPENSSH PRIVATE KEY-----\n");
writeFileSync(join(home, ".ssh", "id_ed25519.pub"), "ssh-ed25519 AAAA test\n");
process.env.HOME = home;

const examples = new URL("../../cluster-configs/", import.meta.url).pathname;
const expected: Record<string, string> = { "local.yaml": "local", "ssh.yaml": "ssh", "aws.yaml": "aws", "gcp.yaml": "gcp", "azure.yaml": "azure" };

it("ships an example for every provider", () => {
  const files = readdirSync(examples).filter((f) => f.endsWith(".yaml"));
  for (const name of Object.keys(expected)) assert.ok(files.includes(name), `cluster-configs/${name} is missing`);
});

for (const [name, type] of Object.entries(expected)) {
  it(`loads cluster-configs/${name}`, () => {
    const c = loadClusterConfig(join(examples, name));
    assert.equal(c.provider.type, type);
    assert.ok(c.available_node_types[c.head_node_type]);
    assert.deepEqual(c.notes, []);
    if (type !== "local") assert.equal(c.auth!.ssh_private_key, join(home, ".ssh", "id_ed25519"));
  });
}

it("the local example starts no extra node agents by default", () => {
  const c = loadClusterConfig(join(examples, "local.yaml"));
  assert.equal(c.cluster_name, "local");
  assert.equal(c.available_node_types.head!.resources.CPU, 2);
  assert.equal(c.available_node_types.worker!.min_workers, 0);
});
