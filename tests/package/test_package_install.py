"""The Debian packages installed and run as an administrator would, on a booted Debian 12.

1. The packages are built (scripts/build-packages.sh, lintian clean), unless
   --packages DIR names built ones.
2. A pristine Debian 12 root is made with debootstrap (minbase + systemd systemd-sysv
   dbus) from the Debian mirror apt uses here; a tarball of it is kept in the work
   directory and unpacked fresh for every run. `apt-get install ./bulkhead-*.deb` runs in
   it (systemd-nspawn without --boot: the packages' dependencies come from the mirror).
3. The root is booted: `systemd-nspawn -D ROOT --boot --register=no --keep-unit
   --private-network` (its own network namespace, so the ruleset never touches this
   machine's), and everything below goes through `nsenter -t <its PID 1>`: systemctl,
   bulkheadctl, nft, and the REST API from the container's loopback.
4. Checks: the controller starts from its unit and /etc/bulkhead/controller.json as user
   bulkhead; the inventory and a policy go in through the API; `bulkheadctl enforcer
   enroll` enrols the enforcer over TLS pinned to the CA the package made; the policy is
   in force (the enforcer acks the generation, table inet bulkhead is in the kernel);
   `systemctl restart` of the enforcer and of the controller and `reload` keep the ruleset
   in force (a tight loop listing the table never sees it absent, and it is the same
   ruleset afterwards); `systemctl stop
   bulkhead-enforcer` leaves it; a configuration error names the member; `systemd-analyze
   security` figures; `apt-get purge` removes the packages' files, configuration and state.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from harness import check, figure, log, poll, report, section  # noqa: E402


def arg(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


REPO = Path(arg("--source-dir", Path(__file__).resolve().parent.parent.parent))
WORK = Path(arg("--work-dir", REPO / "build/package-test"))
PACKAGES = arg("--packages")
SUITE = "bookworm"


def run(argv, timeout=600, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def mirror():
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    for f in [Path("/etc/apt/sources.list.d/debian.sources")] + sorted(Path("/etc/apt/sources.list.d").glob("*")) + \
            [Path("/etc/apt/sources.list")]:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in line:
                return [w for w in words[1:] if "://" in w][0]
    return "http://deb.debian.org/debian"


class Container:
    def __init__(self, root, log_path):
        self.root, self.log_path, self.nspawn, self.pid1 = root, log_path, None, None

    def boot(self):
        self.nspawn = subprocess.Popen(["systemd-nspawn", "-q", "-D", str(self.root), "--boot", "--register=no",
                                        "--keep-unit", "--private-network"],
                                       stdin=subprocess.DEVNULL, stdout=open(self.log_path, "ab"),
                                       stderr=subprocess.STDOUT, start_new_session=True)

        def pid1():
            try:
                children = Path("/proc/%d/task/%d/children" % (self.nspawn.pid, self.nspawn.pid)).read_text().split()
            except OSError:
                return None
            return int(children[0]) if children else None
        self.pid1 = poll(pid1, 30)
        if not self.pid1:
            return False
        state = poll(lambda: self.sh("systemctl is-system-running").stdout.strip() in ("running", "degraded")
                     and self.sh("systemctl is-system-running").stdout.strip(), 90)
        return state

    def enter(self, argv, timeout=120, namespaces=("-a",)):
        return run(["nsenter", "-t", str(self.pid1)] + list(namespaces) + list(argv), timeout=timeout)

    def sh(self, command, timeout=120):
        return self.enter(["/bin/sh", "-c", command], timeout=timeout)

    def host_tool(self, argv, timeout=60):
        """A program of this machine (nft, python3) in the container's network namespace only."""
        return self.enter(argv, timeout=timeout, namespaces=("-n",))

    def api(self, method, path, token, body=None):
        script = ("import json,sys,urllib.request,urllib.error\n"
                  "m,u,t,b=sys.argv[1:5]\n"
                  "r=urllib.request.Request(u,data=(b.encode() if b else (b'' if m=='POST' else None)),method=m,"
                  "headers={'Authorization':'Bearer '+t,'Content-Type':'application/json'})\n"
                  "try:\n  x=urllib.request.urlopen(r,timeout=10); print(x.status); print(x.read().decode())\n"
                  "except urllib.error.HTTPError as e:\n  print(e.code); print(e.read().decode())\n")
        r = self.host_tool([sys.executable, "-c", script, method, "http://127.0.0.1:8080/api/v1" + path, token,
                            json.dumps(body) if body is not None else ""])
        lines = r.stdout.split("\n", 1)
        try:
            return int(lines[0]), json.loads(lines[1]) if len(lines) > 1 and lines[1].strip() else None
        except ValueError:
            return None, r.stdout + r.stderr

    def table(self):
        """table inet bulkhead as the container's kernel holds it (stateless: no counters), or None."""
        r = self.host_tool(["nft", "-s", "list", "table", "inet", "bulkhead"])
        return r.stdout if r.returncode == 0 and "chain" in r.stdout else None

    def watch_table(self, stop_file):
        """Lists the table in a tight loop until stop_file exists; prints one line per moment
        it was absent, then the number of samples. nft's listing is a netlink dump of one
        committed generation: an atomic replace is never seen absent, a delete-then-add is."""
        loop = ('n=0; while [ ! -e "$0" ]; do if nft list table inet bulkhead >/dev/null 2>&1; '
                'then n=$((n+1)); else echo absent; fi; done; echo "samples $n"')
        return subprocess.Popen(["nsenter", "-t", str(self.pid1), "-n", "sh", "-c", loop, str(stop_file)],
                                stdout=subprocess.PIPE, text=True)

    def poweroff(self):
        if self.nspawn is None:
            return
        if self.nspawn.poll() is None and self.pid1:
            self.enter(["systemctl", "poweroff"], timeout=30)
            try:
                self.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if self.nspawn.poll() is None:
            os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.nspawn.wait(timeout=30)


def build_packages():
    out = WORK / "packages"
    started = time.monotonic()
    r = run([str(REPO / "scripts/build-packages.sh")], timeout=3600, env=dict(os.environ, BULKHEAD_PACKAGE_DIR=str(out)))
    figure("package build and lintian (s)", round(time.monotonic() - started))
    check("scripts/build-packages.sh builds the packages and lintian finds nothing", r.returncode == 0,
          (r.stdout + r.stderr)[-3000:])
    return out


def pristine_root(root):
    tarball = WORK / ("debian12-%s-minbase-systemd.tar" % SUITE)
    if not tarball.exists():
        base = WORK / "debootstrap"
        shutil.rmtree(base, ignore_errors=True)
        started = time.monotonic()
        r = run(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus", SUITE, str(base), mirror()],
                timeout=1200)
        figure("debootstrap (s)", round(time.monotonic() - started))
        if not check("debootstrap makes a Debian 12 root", r.returncode == 0, (r.stdout + r.stderr)[-2000:]):
            return False
        run(["tar", "-C", str(base), "-cf", str(tarball) + ".tmp", "."], timeout=600)
        os.replace(str(tarball) + ".tmp", tarball)
        shutil.rmtree(base, ignore_errors=True)
    root.mkdir(parents=True)
    return run(["tar", "-C", str(root), "-xf", str(tarball)], timeout=600).returncode == 0


def container_unsupported():
    """Why systemd-nspawn cannot run a container on this machine, or None. It needs a cgroup
    file system at /sys/fs/cgroup, which a plain chroot (a build root, a CI sandbox) lacks:
    there nspawn stops with "Failed to determine whether the unified cgroups hierarchy is used".
    Checked first, so that such a machine skips in a second instead of failing after the
    package build."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError as e:
        return "cannot read /proc/self/mountinfo (%s)" % e
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) > 4 and after.split()[:1] in (["cgroup2"], ["cgroup"]) and \
                (fields[4] == "/sys/fs/cgroup" or fields[4].startswith("/sys/fs/cgroup/")):
            return None
    return ("no cgroup file system is mounted at /sys/fs/cgroup (a chroot?), so systemd-nspawn cannot run the "
            "Debian 12 container this test boots")


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (debootstrap, systemd-nspawn)")
        return 77
    unsupported = container_unsupported()
    if unsupported:
        print("SKIP: " + unsupported)
        return 77
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter", "nft", "dpkg-buildpackage") if not shutil.which(t)]
    if missing:
        print("SKIP: missing %s (scripts/install-deps.sh installs them)" % " ".join(missing))
        return 77
    WORK.mkdir(parents=True, exist_ok=True)
    root = WORK / "root"
    shutil.rmtree(root, ignore_errors=True)
    container = Container(root, WORK / "container.log")
    try:
        section("packages")
        debs = Path(PACKAGES) if PACKAGES else build_packages()
        names = sorted(p.name for p in debs.glob("*.deb") if "-dbgsym_" not in p.name)
        if not check("three packages", [n.split("_")[0] for n in names] == ["bulkhead-controller", "bulkhead-enforcer",
                                                                              "bulkheadctl"], names):
            return report()

        section("install into a pristine Debian 12 root")
        if not pristine_root(root):
            return report()
        (root / "var/tmp/debs").mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(debs / n, root / "var/tmp/debs" / n)
        started = time.monotonic()
        r = run(["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--", "/bin/sh", "-c",
                 "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                 "apt-get install -y -qq --no-install-recommends " + " ".join("/var/tmp/debs/" + n for n in names)],
                timeout=1200, cwd="/")
        figure("apt-get install (s)", round(time.monotonic() - started))
        if not check("apt-get install ./bulkhead-*.deb", r.returncode == 0, (r.stdout + r.stderr)[-3000:]):
            return report()
        check("postinst made the CA, the controller's key (root:bulkhead 0640) and an admin token",
              (root / "etc/bulkhead/pki/ca.crt").exists() and (root / "etc/bulkhead/tokens.json").exists()
              and oct((root / "etc/bulkhead/pki/controller.key").stat().st_mode & 0o777) == "0o640", r.stdout[-1500:])

        section("boot")
        started = time.monotonic()
        state = container.boot()
        figure("boot to running (s)", round(time.monotonic() - started, 1))
        if not check("the root boots with systemd (running)", state, Path(container.log_path).read_text()[-2000:]):
            return report()
        sh = container.sh
        active = poll(lambda: sh("systemctl is-active bulkhead-controller").stdout.strip() == "active"
                      and container.api("GET", "/health", "")[0] == 200, 30, "bulkhead-controller active and answering")
        check("bulkhead-controller started from its unit at boot", active,
              sh("systemctl status --no-pager bulkhead-controller; journalctl -b --no-pager -u bulkhead-controller")
              .stdout[-3000:])
        main_pid = sh("systemctl show -p MainPID --value bulkhead-controller").stdout.strip()
        check("the controller runs as user bulkhead", sh("stat -c %%U /proc/%s" % main_pid).stdout.strip() == "bulkhead",
              main_pid)
        check("bulkhead-enforcer waits for enrollment (condition: no /etc/bulkhead/enforcer.json)",
              sh("systemctl is-active bulkhead-enforcer").stdout.strip() == "inactive",
              sh("systemctl status --no-pager bulkhead-enforcer").stdout)
        health = container.api("GET", "/health", "")[1] or {}
        check("the controller reports the package's version (one version for the product)",
              health.get("version") and names[0].startswith("bulkhead-controller_%s_" % health.get("version")),
              [health, names])

        section("security")
        for unit in ("bulkhead-controller", "bulkhead-enforcer"):
            r = sh("systemd-analyze security --no-pager %s.service | tail -1" % unit)
            figure("systemd-analyze security %s" % unit, r.stdout.strip().replace("→ Overall exposure level for ", ""))

        section("enrol and activate a policy")
        token = json.loads((root / "etc/bulkhead/tokens.json").read_text())["tokens"][0]["token"]
        inventory = json.loads((REPO / "examples/vdi-pool/inventory.json").read_text())
        status, body = container.api("PUT", "/inventory", token, inventory)
        check("PUT /inventory", status == 200, body)
        status, revision = container.api("POST", "/policies", token,
                                         json.loads((REPO / "examples/vdi-pool/policy.json").read_text()))
        check("POST /policies", status == 201, revision)
        status, activated = container.api("POST", "/policies/%d/activate" % revision["id"], token) \
            if status == 201 else (None, None)
        check("activate the policy", status == 200, activated)
        status, issued = container.api("POST", "/enforcers/hv1/enrollment-token", token)
        check("an enrollment token for hv1", status == 201, issued)
        r = sh("bulkheadctl enforcer enroll --controller https://127.0.0.1:8443 --ca /etc/bulkhead/pki/ca.crt "
               "--enforcer-id hv1 --token-file - <<EOF\n%s\nEOF" % (issued or {}).get("token", ""), timeout=90)
        check("bulkheadctl enforcer enroll: one command, TLS pinned to the controller's CA", r.returncode == 0,
              r.stdout + r.stderr + sh("journalctl -b --no-pager -u bulkhead-enforcer | tail -30").stdout)
        check("the token file is 0600, the enforcer's configuration names the controller",
              oct((root / "etc/bulkhead/enrollment.token").stat().st_mode & 0o777) == "0o600" and
              json.loads((root / "etc/bulkhead/enforcer.json").read_text()).get("controller") == "https://127.0.0.1:8443")

        def in_sync():
            status, body = container.api("GET", "/enforcers/hv1", token)
            return body if status == 200 and body.get("connected") and body.get("in_sync") and \
                body.get("applied_generation", 0) >= 1 else None
        check("the enforcer acks the active policy (connected, in sync)", poll(in_sync, 30), container.api(
            "GET", "/enforcers/hv1", token))
        in_force = container.table()
        check("table inet bulkhead is in the container's kernel namespace", in_force is not None)
        check("and not in this machine's", run(["nft", "list", "table", "inet", "bulkhead"]).returncode != 0)

        section("restarts keep enforcement")
        for action, unit in (("restart", "bulkhead-enforcer"), ("restart", "bulkhead-controller"),
                             ("reload", "bulkhead-enforcer")):
            stop_file = WORK / "watch.stop"
            stop_file.unlink(missing_ok=True)
            watcher = container.watch_table(stop_file)
            r = sh("systemctl %s %s" % (action, unit))
            check("systemctl %s %s" % (action, unit), r.returncode == 0 and
                  sh("systemctl is-active %s" % unit).stdout.strip() == "active", r.stderr)
            synced = poll(in_sync, 30)
            stop_file.touch()
            watched = watcher.communicate(timeout=30)[0].split("\n")
            samples = [w for w in watched if w.startswith("samples")]
            check("  the table was never absent meanwhile (%s)" % (samples[0] if samples else "?"),
                  samples and "absent" not in watched and int(samples[0].split()[1]) > 0, watched[-5:])
            check("  the enforcer is in sync again", synced, container.api("GET", "/enforcers/hv1", token))
            check("  the same ruleset is in force", container.table() == in_force)
        r = sh("systemctl stop bulkhead-enforcer")
        check("systemctl stop bulkhead-enforcer leaves the ruleset in force", r.returncode == 0 and
              sh("systemctl is-active bulkhead-enforcer").stdout.strip() == "inactive" and
              container.table() == in_force, [r.stderr, container.table()])

        section("configuration errors name the member")
        config = root / "etc/bulkhead/enforcer.json"
        good = config.read_text()
        config.write_text(json.dumps(dict(json.loads(good), log_levle="info"), indent=2))
        sh("systemctl start bulkhead-enforcer")
        journal = lambda: sh("journalctl -b --no-pager -u bulkhead-enforcer").stdout  # noqa: E731
        check("an unknown member in /etc/bulkhead/enforcer.json: the start fails naming /log_levle",
              poll(lambda: "/etc/bulkhead/enforcer.json: /log_levle: unknown member" in journal(), 15),
              journal()[-1500:])
        check("  and the ruleset is still in force", container.table() == in_force)
        sh("systemctl stop bulkhead-enforcer; systemctl reset-failed bulkhead-enforcer")
        config.write_text(good)

        section("purge")
        r = sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq bulkhead-controller bulkhead-enforcer bulkheadctl",
               timeout=300)
        check("apt-get purge", r.returncode == 0, (r.stdout + r.stderr)[-2000:])
        left = [p for p in ("usr/sbin/bulkhead-controller", "usr/sbin/bulkhead-enforcer", "usr/bin/bulkheadctl",
                            "etc/bulkhead", "var/lib/bulkhead-controller", "var/lib/bulkhead-enforcer",
                            "lib/systemd/system/bulkhead-controller.service",
                            "lib/systemd/system/bulkhead-enforcer.service", "usr/share/bulkhead",
                            "usr/share/bulkhead-controller", "etc/systemd/system/multi-user.target.wants/"
                            "bulkhead-controller.service") if os.path.lexists(root / p)]
        check("purge removes what the packages installed and made", not left, left)
        check("no bulkhead unit is left running", "bulkhead" not in sh("systemctl list-units --no-pager --all").stdout)
    finally:
        container.poweroff()
        shutil.rmtree(root, ignore_errors=True)
    return report()


if __name__ == "__main__":
    sys.exit(main())
