// Cluster YAML validation: real YAML text in, the config or the exact messages out.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isUserError } from "../../src/errors.js";
import { ConfigError, azureVmParameters, loadClusterConfig, parseClusterConfig } from "../../src/config/index.js";

const dir = mkdtempSync(join(tmpdir(), "tray-config-test-"));
const key = join(dir, "id_test");
writeFileSync(key, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
writeFileSync(`${key}.pub`, "ssh-ed25519 AAAA test\n");
const file = join(dir, "cluster.yaml");

const parse = (text: string) => parseClusterConfig(text, file);

/** The problem lines of a config that must fail, without the "file:" prefix. */
function problems(text: string): string[] {
  try {
    parse(text);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.ok(isUserError(e));
    return e.lines.map((l) => l.slice(file.length + 1));
  }
  assert.fail("expected the config to be rejected");
}

const auth = `auth:\n  ssh_user: ubuntu\n  ssh_private_key: ${key}\n`;

describe("defaults", () => {
  it("fills a local cluster from just a name", () => {
    const c = parse("cluster_name: local\n");
    assert.equal(c.provider.type, "local");
    assert.equal(c.head_node_type, "head");
    assert.deepEqual(c.available_node_types, {
      head: { resources: { CPU: availableParallelism() }, node_config: {}, min_workers: 0, max_workers: 0 },
    });
    assert.equal(c.max_workers, 0);
    assert.equal(c.idle_timeout_minutes, 5);
    assert.equal(c.upscaling_speed, 1);
    assert.deepEqual(c.setup_commands, []);
    assert.deepEqual(c.file_mounts, {});
    assert.equal(c.auth, undefined);
    assert.deepEqual(c.notes, []);
  });

  it("takes the only node type as the head", () => {
    const c = parse("cluster_name: a\navailable_node_types:\n  big: { resources: { CPU: 4 } }\n");
    assert.equal(c.head_node_type, "big");
  });

  it("takes the type named head when there are several", () => {
    const c = parse("cluster_name: a\navailable_node_types:\n  worker: { min_workers: 1 }\n  head: {}\n");
    assert.equal(c.head_node_type, "head");
  });

  it("defaults max_workers to what the node types ask for", () => {
    const c = parse(`cluster_name: a
available_node_types:
  head: {}
  small: { min_workers: 2 }
  big: { min_workers: 1, max_workers: 3 }
`);
    assert.equal(c.available_node_types.small!.max_workers, 2);
    assert.equal(c.available_node_types.head!.max_workers, 0);
    assert.equal(c.max_workers, 5);
  });

  it("gives a worker type the cluster's max_workers as its own, as Ray does", () => {
    const c = parse("cluster_name: a\nmax_workers: 6\navailable_node_types:\n  head: {}\n  worker: { min_workers: 1 }\n");
    assert.equal(c.available_node_types.worker!.max_workers, 6);
    assert.equal(c.available_node_types.head!.max_workers, 0);
  });

  it("accepts Ray's start commands and says they are ignored", () => {
    const c = parse("cluster_name: a\nhead_start_ray_commands:\n  - ray start --head\n");
    assert.deepEqual(c.notes, [`${file}:2: head_start_ray_commands: ignored: tray starts its own agent on every node instead of \`ray start\``]);
  });

  it("keeps anchors and merge keys working, with lines from the file", () => {
    const text = `cluster_name: a
available_node_types:
  head: &base
    resources: { CPU: 1 }
  worker:
    <<: *base
    min_workers: x
`;
    assert.deepEqual(problems(text), ["7: available_node_types.worker.min_workers: must be a whole number, got text \"x\""]);
    const merged = parse(text.replace("min_workers: x", "min_workers: 1"));
    assert.deepEqual(merged.available_node_types.worker!.resources, { CPU: 1 });
  });
});

describe("errors", () => {
  it("suggests the closest known key for a typo", () => {
    assert.deepEqual(problems("cluster_name: a\nprovider:\n  type: ssh\n  head_ip: 10.0.0.1\n  wroker_ips: []\n" + auth), [
      "5: provider.wroker_ips: unknown key; did you mean `worker_ips`?",
    ]);
    assert.deepEqual(problems("cluster_name: a\nsetup_comands: []\n"), ["2: setup_comands: unknown key; did you mean `setup_commands`?"]);
  });

  it("lists the known keys when nothing is close", () => {
    const [line] = problems("cluster_name: a\navailable_node_types:\n  head: { zebra: 1 }\n");
    assert.equal(line, "3: available_node_types.head.zebra: unknown key; known keys here: resources, node_config, min_workers, max_workers");
  });

  it("says where a key belongs when it is in the wrong section", () => {
    assert.deepEqual(problems("cluster_name: a\nhead_ip: 1.2.3.4\nssh_user: x\n"), [
      "2: head_ip: belongs under `provider:`",
      "3: ssh_user: belongs under `auth:`",
    ]);
  });

  it("points Ray's on-prem users from type local to type ssh", () => {
    const [line] = problems("cluster_name: a\nprovider:\n  type: local\n  head_ip: 1.2.3.4\n");
    assert.match(line!, /^4: provider\.head_ip: type local runs every node on this machine; .* write `type: ssh`$/);
  });

  it("names the provider type a key belongs to", () => {
    assert.deepEqual(problems(`cluster_name: a\nprovider:\n  type: azure\n  location: westus2\n  resource_group: g\n  subscription_id: 00000000-0000-0000-0000-000000000000\n  region: x\n${auth}available_node_types:\n  head: { node_config: { vmSize: B2s } }\n`), [
      "7: provider.region: only used with type aws or gcp, and this provider is type azure",
    ]);
  });

  it("reports wrong types with what was found", () => {
    assert.deepEqual(problems(`cluster_name: a
available_node_types:
  head:
    resources: { CPU: "2", GPU: -1, memory: lots }
    min_workers: 1.5
setup_commands: pip install x
idle_timeout_minutes: [1]
`), [
      '4: available_node_types.head.resources.CPU: must be a number, got text "2"',
      "4: available_node_types.head.resources.GPU: must be at least 0, got -1",
      '4: available_node_types.head.resources.memory: must be a number (bytes), got text "lots"',
      "5: available_node_types.head.min_workers: must be a whole number, got 1.5",
      '6: setup_commands: must be a list of text items, got text "pip install x"',
      "7: idle_timeout_minutes: must be a number, got a list",
    ]);
  });

  it("catches resource names in the wrong case", () => {
    assert.deepEqual(problems("cluster_name: a\navailable_node_types:\n  head: { resources: { cpu: 2 } }\n"), [
      "3: available_node_types.head.resources.cpu: resource names are case-sensitive; did you mean `CPU`?",
    ]);
  });

  it("requires cluster_name and says what a name may hold", () => {
    assert.deepEqual(problems("provider: { type: local }\n"), [
      "1: cluster_name: required: name this cluster with lowercase letters, digits and dashes, e.g. `cluster_name: demo`",
    ]);
    const [line] = problems("cluster_name: My_Cluster\n");
    assert.match(line!, /^1: cluster_name: "My_Cluster" is not allowed: use 1 to 40 lowercase letters, digits and dashes/);
    assert.equal(parse("cluster_name: 2024\n").cluster_name, "2024");
  });

  it("rejects an unknown provider type with a suggestion", () => {
    assert.deepEqual(problems("cluster_name: a\nprovider: { type: gpc }\n"), [
      '2: provider.type: must be one of local, ssh, aws, gcp, azure, got text "gpc"; did you mean `gcp`?',
    ]);
  });

  it("reports invalid YAML with its line", () => {
    const lines = problems("cluster_name: a\nprovider:\n  type: local\n   bad: [\n");
    assert.ok(lines.length >= 1);
    assert.match(lines[0]!, /^3: invalid YAML: /);
  });

  it("reports a duplicate key", () => {
    assert.deepEqual(problems("cluster_name: a\ncluster_name: b\n").map((l) => l.replace(/: invalid YAML: .*/, "")), ["2"]);
  });

  it("reports every problem at once, in line order", () => {
    const text = `cluster_name: Bad!
provider:
  type: ssh
auth:
  ssh_user: ubuntu
  ssh_private_key: ./missing_key
available_node_types:
  head: { min_workers: 3, max_workers: 1 }
head_node_type: hed
docker:
  image: rayproject/ray
`;
    let message = "";
    try {
      parse(text);
    } catch (e) {
      message = (e as Error).message;
    }
    assert.equal(message, [
      `${file} has 6 problems:`,
      `${file}:1: cluster_name: "Bad!" is not allowed: use 1 to 40 lowercase letters, digits and dashes, starting and ending with a letter or digit (it becomes part of VM and folder names)`,
      `${file}:2: provider.head_ip: required: the address of the head host, e.g. 10.0.0.1`,
      `${file}:6: auth.ssh_private_key: no such file: ${join(dir, "missing_key")}`,
      `${file}:8: available_node_types.head.min_workers: is 3, more than this type's max_workers (1)`,
      `${file}:9: head_node_type: no node type named "hed" in available_node_types; did you mean \`head\`?`,
      `${file}:10: docker: not supported yet: tray runs jobs directly on each host; remove this section and install what jobs need with setup_commands`,
    ].join("\n"));
  });

  it("requires head_node_type when no type is obviously the head", () => {
    assert.deepEqual(problems("cluster_name: a\navailable_node_types:\n  a: {}\n  b: {}\n"), [
      "1: head_node_type: required: which node type runs the head: one of a, b",
    ]);
  });

  it("checks that max_workers covers the node types' min_workers", () => {
    assert.deepEqual(problems("cluster_name: a\nmax_workers: 1\navailable_node_types:\n  head: {}\n  w: { min_workers: 2 }\n"), [
      "2: max_workers: is 1, fewer than the 2 workers that the node types' min_workers add up to",
    ]);
  });

  it("checks file_mounts on both sides", () => {
    mkdirSync(join(dir, "data"), { recursive: true });
    const c = parse('cluster_name: a\nfile_mounts:\n  "/srv/data": ./data\n');
    assert.deepEqual(c.file_mounts, { "/srv/data": join(dir, "data") });
    assert.deepEqual(problems('cluster_name: a\nfile_mounts:\n  "srv": ./data\n  "~/x": ./nothing\n'), [
      '3: file_mounts.srv: the remote path (the key) must be absolute or start with ~/',
      `4: file_mounts["~/x"]: no such file or folder: ${join(dir, "nothing")}`,
    ]);
  });

  it("rejects an empty file and a file that is not a mapping", () => {
    assert.match(problems("")[0]!, /^1: the file is empty/);
    assert.match(problems("- a\n- b\n")[0]!, /^1: the file must hold a mapping/);
  });

  it("reports a missing file as a UserError", () => {
    assert.throws(() => loadClusterConfig(join(dir, "nope.yaml")), (e: unknown) => isUserError(e) && /nope\.yaml: no such cluster config file/.test((e as Error).message));
  });
});

describe("provider ssh", () => {
  it("makes one worker per host when no node types are given", () => {
    const c = parse(`cluster_name: a\nprovider:\n  type: ssh\n  head_ip: 10.0.0.1\n  worker_ips: [10.0.0.2, 10.0.0.3]\n${auth}`);
    assert.equal(c.provider.type, "ssh");
    assert.deepEqual(Object.keys(c.available_node_types), ["head", "worker"]);
    assert.equal(c.available_node_types.worker!.min_workers, 2);
    assert.equal(c.max_workers, 2);
    assert.deepEqual(c.auth, { ssh_user: "ubuntu", ssh_private_key: key, ssh_public_key: `${key}.pub` });
  });

  it("resolves a relative key from the file's folder and ~ from HOME", () => {
    const c = parse(`cluster_name: a\nprovider: { type: ssh, head_ip: h }\nauth: { ssh_user: u, ssh_private_key: id_test }\n`);
    assert.equal(c.auth!.ssh_private_key, key);
    const home = process.env.HOME;
    process.env.HOME = dir;
    try {
      assert.equal(parse(`cluster_name: a\nprovider: { type: ssh, head_ip: h }\nauth: { ssh_user: u, ssh_private_key: ~/id_test }\n`).auth!.ssh_private_key, key);
    } finally {
      process.env.HOME = home;
    }
  });

  it("requires head_ip, the user and an existing key", () => {
    assert.deepEqual(problems("cluster_name: a\nprovider: { type: ssh }\n"), [
      "2: provider.head_ip: required: the address of the head host, e.g. 10.0.0.1",
      "1: auth.ssh_user: required: the user tray logs in as on every host, e.g. ubuntu",
      "1: auth.ssh_private_key: required: the private key that logs in to the hosts, e.g. ~/.ssh/id_ed25519 (make one with ssh-keygen -t ed25519)",
    ].sort((a, b) => parseInt(a) - parseInt(b)));
  });

  it("rejects a host listed twice and more workers than hosts", () => {
    assert.deepEqual(problems(`cluster_name: a\nprovider:\n  type: ssh\n  head_ip: h1\n  worker_ips: [h2, h1]\n${auth}available_node_types:\n  head: {}\n  w: { min_workers: 3 }\n`), [
      "5: provider.worker_ips[1]: h1 is listed twice (a host runs one node; the head host already runs a node)",
      "9: available_node_types: the node types' min_workers add up to 3 workers, but provider.worker_ips lists 2 hosts (one node per host)",
    ]);
  });

  it("checks known_hosts_file and ssh_allowed_cidr", () => {
    assert.deepEqual(problems(`cluster_name: a\nprovider:\n  type: ssh\n  head_ip: h\n  known_hosts_file: ./kh\n  ssh_allowed_cidr: 10.0.0.1/40\n${auth}`), [
      `5: provider.known_hosts_file: no such file: ${join(dir, "kh")}`,
      '6: provider.ssh_allowed_cidr: must be an address range like 203.0.113.7/32, got text "10.0.0.1/40"',
    ]);
  });
});

describe("provider aws", () => {
  const aws = (provider: string, nodeConfig = "{ InstanceType: m5.large }") =>
    `cluster_name: a\nprovider:\n  type: aws\n${provider}${auth}available_node_types:\n  head: { node_config: ${nodeConfig} }\n`;

  it("splits availability zones in order and defaults the cloud flags", () => {
    const c = parse(aws("  region: us-west-2\n  availability_zone: us-west-2b, us-west-2a\n  security_group: { GroupName: tray }\n  tags: { n: 1 }\n"));
    assert.ok(c.provider.type === "aws");
    assert.deepEqual(c.provider.availability_zones, ["us-west-2b", "us-west-2a"]);
    assert.deepEqual(c.provider.security_group, { GroupName: "tray" });
    assert.deepEqual(c.provider.tags, { n: "1" });
    assert.equal(c.provider.use_internal_ips, false);
    assert.equal(c.provider.cache_stopped_nodes, false);
  });

  it("requires the region and a zone inside it", () => {
    assert.deepEqual(problems(aws("  availability_zone: eu-west-1a\n")), ["2: provider.region: required: the AWS region, e.g. us-west-2"]);
    assert.deepEqual(problems(aws("  region: us-west-2\n  availability_zone: us-east-1a\n")), ["5: provider.availability_zone: zone us-east-1a is not in region us-west-2"]);
  });

  it("checks the shape of well-known node_config keys and lets others through", () => {
    const c = parse(aws("  region: us-west-2\n", "{ InstanceType: m5.large, SomeFutureKey: 1 }"));
    assert.equal(c.available_node_types.head!.node_config.SomeFutureKey, 1);
    assert.deepEqual(problems(aws("  region: us-west-2\n", "{ BlockDeviceMappings: { a: 1 } }")), [
      "9: available_node_types.head.node_config.BlockDeviceMappings: must be a list, got a mapping",
      "9: available_node_types.head.node_config.InstanceType: required: the machine size for provider type aws, e.g. m5.large",
    ]);
  });

  it("requires node types and the public key", () => {
    assert.deepEqual(problems(`cluster_name: a\nprovider: { type: aws, region: us-west-2 }\n${auth}`), [
      "1: available_node_types: required for provider type aws: name a head type and worker types, each with node_config.InstanceType (e.g. m5.large)",
    ]);
    const [line] = problems(aws("  region: us-west-2\n").replace(`ssh_private_key: ${key}`, `ssh_private_key: ${key}\n  ssh_public_key: ./nope.pub`));
    assert.equal(line, `8: auth.ssh_public_key: no such file: ${join(dir, "nope.pub")} (tray installs this public key on new VMs)`);
  });

  it("defaults the login user of the cloud's images", () => {
    const c = parse(aws("  region: us-west-2\n").replace("  ssh_user: ubuntu\n", ""));
    assert.equal(c.auth!.ssh_user, "ubuntu");
  });
});

describe("provider gcp", () => {
  it("requires project, region and zone", () => {
    assert.deepEqual(problems(`cluster_name: a\nprovider: { type: gcp }\n${auth}available_node_types:\n  head: { node_config: { machineType: n2-standard-2 } }\n`), [
      "2: provider.project_id: required: the Google Cloud project id, e.g. my-project-123456",
      "2: provider.region: required: the Compute Engine region, e.g. us-west1",
      "2: provider.availability_zone: required: the zone to create VMs in, e.g. us-west1-a",
    ]);
  });

  it("loads a complete config", () => {
    const c = parse(`cluster_name: a\nprovider: { type: gcp, project_id: p, region: us-west1, availability_zone: us-west1-a }\n${auth}available_node_types:\n  head: { node_config: { machineType: n2-standard-2, scheduling: [{ preemptible: true }] } }\n`);
    assert.ok(c.provider.type === "gcp");
    assert.deepEqual(c.provider.availability_zones, ["us-west1-a"]);
    assert.equal(c.auth!.ssh_user, "ubuntu");
  });
});

describe("provider azure", () => {
  const azure = (sub: string, nodeConfig: string) =>
    `cluster_name: a\nprovider: { type: azure, location: westus2, resource_group: g, subscription_id: ${sub} }\n${auth.replace("  ssh_user: ubuntu\n", "")}available_node_types:\n  head: { node_config: ${nodeConfig} }\n`;

  it("accepts Ray's azure_arm_parameters and defaults the user to azureuser", () => {
    const c = parse(azure("00000000-0000-0000-0000-000000000000", "{ azure_arm_parameters: { vmSize: Standard_D2s_v5, imageSku: server } }"));
    assert.equal(c.auth!.ssh_user, "azureuser");
    assert.deepEqual(azureVmParameters(c.available_node_types.head!.node_config), { vmSize: "Standard_D2s_v5", imageSku: "server" });
  });

  it("checks the subscription id and the VM size", () => {
    assert.deepEqual(problems(azure("my-sub", "{ imageSku: 1 }")), [
      '2: provider.subscription_id: must be a subscription GUID like 00000000-0000-0000-0000-000000000000, got text "my-sub"',
      "6: available_node_types.head.node_config.imageSku: must be text, got number 1",
      "6: available_node_types.head.node_config.vmSize: required: the machine size for provider type azure, e.g. Standard_D2s_v3",
    ]);
  });
});
