"""`./scripts/quickstart.sh | tee demo.log`, then Ctrl-C: nothing of the demo is left.

The terminal's Ctrl-C sends SIGINT to the whole foreground process group, so tee dies with
the script and the script's stdout becomes a closed pipe while it cleans up. This test
builds that same pipeline (the script and tee in one process group of their own), waits
until the demo says it is running, sends SIGINT to the group and then checks, on the real
system, that every namespace and root link of the demo is gone and every daemon the lab
started has exited. The demo runs under its own prefix, ports and management network
(BULKHEAD_DEMO_* variables) on the binaries ctest built (BULKHEAD_DEMO_SKIP_BUILD=1).
"""
import json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from harness import check, figure, log, poll, report  # noqa: E402

REPO = Path(sys.argv[sys.argv.index("--source-dir") + 1]) if "--source-dir" in sys.argv else \
    Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.argv[sys.argv.index("--bin-dir") + 1]) if "--bin-dir" in sys.argv else REPO / "build/bin"
PREFIX, PORT, MGMT, TLS_PORT = "bhpkg-", 18691, "10.254.82.0/24", 18943


def leftovers():
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.split("\n")
    return ([l.split()[0] for l in ns if l.startswith(PREFIX)] +
            [l.split(":")[1].strip().split("@")[0] for l in links if l.count(":") > 1 and
             l.split(":")[1].strip().startswith(PREFIX)])


def alive(pid):
    """Running (a zombie has exited: it only waits for its new parent, here PID 1, to reap it)."""
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)")
        return 77
    if leftovers():
        print("SKIP: something with prefix %s exists already: %s" % (PREFIX, leftovers()))
        return 77
    work = Path(tempfile.mkdtemp(prefix="bhpkg-quickstart-"))
    state, demo_log = work / "state", work / "demo.log"
    env = dict(os.environ, BULKHEAD_DEMO_SKIP_BUILD="1", BULKHEAD_DEMO_BIN_DIR=str(BIN),
               BULKHEAD_DEMO_STATE=str(state), BULKHEAD_DEMO_PREFIX=PREFIX,
               BULKHEAD_DEMO_API_LISTEN="127.0.0.1:%d" % PORT, BULKHEAD_DEMO_MGMT_NET=MGMT,
               BULKHEAD_DEMO_TLS_PORT=str(TLS_PORT))
    script = subprocess.Popen([str(REPO / "scripts/quickstart.sh")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=env, process_group=0)
    tee = subprocess.Popen(["tee", str(demo_log)], stdin=script.stdout, stdout=subprocess.DEVNULL,
                           process_group=script.pid)
    script.stdout.close()  # tee is now the pipe's only reader: when it dies, the pipe is closed
    pids = []
    try:
        started = time.monotonic()
        running = poll(lambda: "The demo is running" in demo_log.read_text(errors="replace")
                       if demo_log.exists() else (script.poll() is not None and "exited"),
                       240, "the demo says it is running")
        if running is not True:
            log(demo_log.read_text(errors="replace")[-3000:] if demo_log.exists() else "(no output)")
            return report()
        figure("demo up (s)", round(time.monotonic() - started, 1))
        doc = json.loads((state / "lab.json").read_text())
        pids = [p["pid"] for p in doc.get("processes", [])]
        check("the demo's daemons run before Ctrl-C", pids and all(alive(p) for p in pids), pids)
        check("the demo's namespaces exist before Ctrl-C", len(leftovers()) >= 13, leftovers())

        interrupted = time.monotonic()
        os.killpg(script.pid, signal.SIGINT)   # what the terminal does on Ctrl-C
        try:
            tee.wait(timeout=10)
            script.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
        check("tee died of the SIGINT (the script's stdout was a closed pipe while it cleaned up)",
              tee.returncode == -signal.SIGINT, tee.returncode)
        check("quickstart.sh exited after Ctrl-C", script.returncode is not None, "still running")
        figure("Ctrl-C to exit (s)", round(time.monotonic() - interrupted, 1))
        check("no namespace or root link of the demo is left", not leftovers(), leftovers())
        check("every daemon the demo started has exited", poll(lambda: not any(alive(p) for p in pids), 10),
              [p for p in pids if alive(p)])
    finally:
        for p in (script, tee):
            if p.poll() is None:
                os.killpg(script.pid, signal.SIGKILL)
                p.wait(timeout=10)
        if leftovers() or any(alive(p) for p in pids):  # only after a failure: leave the machine clean
            subprocess.run([sys.executable, str(REPO / "examples/lab/lab.py"), "down", "--purge", "--prefix", PREFIX,
                            "--state-dir", str(state)], capture_output=True, timeout=180)
        subprocess.run(["rm", "-rf", str(work)])
    return report()


if __name__ == "__main__":
    sys.exit(main())
