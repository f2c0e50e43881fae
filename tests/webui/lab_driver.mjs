// What the browser test and the web UI benchmark share: PASS/FAIL lines, lab.py under the
// suite's own prefix, commands in lab namespaces, the plain loopback API, polling with a
// deadline (tests/lab_harness/lab_harness.py does the same for the Python suites).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

export const failures = [];

export function check(ok, what) {
  console.log((ok ? "PASS " : "FAIL ") + what);
  if (!ok) {
    failures.push(what);
  }
  return ok;
}

export function argument(name, fallback) {
  const index = process.argv.indexOf(name);
  return index >= 0 ? process.argv[index + 1] : fallback;
}

/** playwright-core from webui/node_modules (installed by scripts/build.sh), or undefined. */
export function loadPlaywright(repo) {
  const packageJson = path.join(repo, "webui/package.json");
  try {
    return createRequire(packageJson)("playwright-core");
  } catch {
    return undefined;
  }
}

export class Lab {
  constructor({ repo, bin, prefix, state, mgmt, apiPort, tlsPort }) {
    Object.assign(this, { repo, bin, prefix, state, mgmt, apiPort, tlsPort });
    this.labPy = path.join(repo, "examples/lab/lab.py");
    this.children = [];
  }

  run(command, args = [], timeoutMs = 180000) {
    const result = spawnSync("python3", [this.labPy, command, "--prefix", this.prefix, "--state-dir", this.state, ...args], {
      encoding: "utf8",
      timeout: timeoutMs,
    });
    return { code: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? "" };
  }

  exec(namespace, argv, timeoutMs = 30000) {
    return this.run("exec", [namespace, "--", ...argv], timeoutMs);
  }

  /** A process in a lab namespace, in the background; resolves with its exit code. */
  background(namespace, argv) {
    const child = spawn("python3", [this.labPy, "exec", "--prefix", this.prefix, "--state-dir", this.state, namespace, "--", ...argv], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.children.push(child);
    child.stdout.resume();
    child.stderr.resume();
    return new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  }

  up(extra = []) {
    return this.run("up", [
      "--api-listen", `127.0.0.1:${this.apiPort}`,
      "--mgmt-net", this.mgmt,
      "--tls-port", String(this.tlsPort),
      "--controller-bin", path.join(this.bin, "bulkhead-controller"),
      "--enforcer-bin", path.join(this.bin, "bulkhead-enforcer"),
      `--controller-arg=--webui-dir=${path.join(this.repo, "webui/dist")}`,
      ...extra,
    ]);
  }

  down() {
    for (const child of this.children) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
      }
    }
    return this.run("down", ["--purge"]);
  }

  token(name) {
    return readFileSync(path.join(this.state, "tokens", `${name}.token`), "utf8").trim();
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  /** {status, body} or {status: null, body: reason} when the controller does not answer. */
  async api(method, apiPath, token, body) {
    try {
      const response = await fetch(`${this.baseUrl}/api/v1${apiPath}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: body === undefined ? (method === "POST" || method === "DELETE" ? "" : undefined) : typeof body === "string" ? body : JSON.stringify(body),
        signal: AbortSignal.timeout(15000),
      });
      const text = await response.text();
      let parsed = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
      return { status: response.status, body: parsed };
    } catch (error) {
      return { status: null, body: String(error) };
    }
  }

  /** The lab policy uploaded and activated; resolves once every enforcer acked it. */
  async activateLabPolicy(admin) {
    const policy = JSON.parse(readFileSync(path.join(this.repo, "examples/lab/policy.json"), "utf8"));
    const uploaded = await this.api("POST", "/policies", admin, policy);
    check(uploaded.status === 201, `upload the lab policy (201; got ${uploaded.status} ${JSON.stringify(uploaded.body).slice(0, 300)})`);
    const activated = await this.api("POST", `/policies/${uploaded.body?.id}/activate`, admin);
    check(activated.status === 200, `activate it (200; got ${activated.status})`);
    const generation = activated.body?.generation ?? 0;
    await poll(() => this.allInSync(admin, generation), 20, `every enforcer acks generation ${generation}`);
    return generation;
  }

  async allInSync(token, generation) {
    const { status, body } = await this.api("GET", "/enforcers", token);
    if (status !== 200 || body.enforcers.length === 0) {
      return null;
    }
    return body.enforcers.every((e) => e.connected && e.in_sync && (e.applied_generation ?? 0) >= generation) ? body.enforcers : null;
  }
}

/** Calls `predicate` until it returns something truthy or `seconds` pass (then FAIL). */
export async function poll(predicate, seconds, what) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const value = await predicate();
    if (value) {
      check(true, what);
      return value;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  check(false, `within ${seconds}s: ${what}`);
  return null;
}

export function requirements(repo) {
  const missing = [];
  if (process.getuid?.() !== 0) missing.push("root");
  if (!existsSync("/usr/bin/chromium")) missing.push("/usr/bin/chromium (apt-get install chromium)");
  if (!loadPlaywright(repo)) missing.push("playwright-core in webui/node_modules (scripts/build.sh installs it)");
  return missing;
}
