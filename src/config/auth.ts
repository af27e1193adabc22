// The `auth:` section: who tray logs in as, and with which key. The private key stays on this
// machine (tray never copies it to the head); its existence is checked now, so a typo in the
// path is reported before any VM is created.
import { checkKnownKeys, readMap, readString, required, type YamlMap } from "./fields.js";
import { expandPath, pathProblem } from "./paths.js";
import type { Problems } from "./problems.js";
import type { AuthConfig, ProviderType } from "./types.js";

const AUTH_KEYS = ["ssh_user", "ssh_private_key", "ssh_public_key"];
const PATH = ["auth"] as const;

/** The login user of each cloud's stock Ubuntu images, as in Ray. */
const DEFAULT_USER: Partial<Record<ProviderType, string>> = { aws: "ubuntu", gcp: "ubuntu", azure: "azureuser" };

export function readAuth(p: Problems, root: YamlMap, type: ProviderType, baseDir: string): AuthConfig | undefined {
  const present = root.auth !== undefined && root.auth !== null;
  if (type === "local") {
    if (present) p.note(PATH, "not used with provider type local (every node runs on this machine as you); ignored");
    return undefined;
  }
  const section = present ? readMap(p, root.auth, PATH) : {};
  if (!section) return undefined;
  checkKnownKeys(p, section, PATH, AUTH_KEYS);

  const ssh_user = readString(p, section, PATH, "ssh_user") ?? DEFAULT_USER[type];
  if (ssh_user === undefined && section.ssh_user == null) required(p, [...PATH, "ssh_user"], "the user tray logs in as on every host, e.g. ubuntu");

  const rawKey = readString(p, section, PATH, "ssh_private_key");
  if (rawKey === undefined && section.ssh_private_key == null) {
    required(p, [...PATH, "ssh_private_key"], "the private key that logs in to the hosts, e.g. ~/.ssh/id_ed25519 (make one with ssh-keygen -t ed25519)");
  }
  const ssh_private_key = rawKey === undefined ? undefined : expandPath(rawKey, baseDir);
  const privateProblem = ssh_private_key ? pathProblem(ssh_private_key, "file") : undefined;
  if (privateProblem) p.error([...PATH, "ssh_private_key"], privateProblem);

  const rawPub = readString(p, section, PATH, "ssh_public_key");
  const ssh_public_key = rawPub !== undefined ? expandPath(rawPub, baseDir) : ssh_private_key ? `${ssh_private_key}.pub` : undefined;
  // Clouds install the public key on new VMs; bare hosts must already trust it, so only check for clouds.
  // A derived path is not worth a second message when the private key itself is missing.
  if (ssh_public_key && type !== "ssh" && (rawPub !== undefined || !privateProblem)) {
    const problem = pathProblem(ssh_public_key, "file");
    if (problem) {
      p.error([...PATH, rawPub !== undefined ? "ssh_public_key" : "ssh_private_key"],
        rawPub !== undefined ? `${problem} (tray installs this public key on new VMs)`
          : `${problem} (tray installs the public key on new VMs; it is ssh_private_key + ".pub" unless ssh_public_key is set)`);
    }
  }
  if (!ssh_user || !ssh_private_key || !ssh_public_key) return undefined;
  return { ssh_user, ssh_private_key, ssh_public_key };
}
