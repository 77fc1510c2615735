#!/usr/bin/env python3
"""The fan-out benchmark (run through bench/fanout, which builds opsd and installs the peers).

The same work for every tool — connect, authenticate with the sandbox's ed25519 key, run `uname -r`,
collect output and exit status — on N sandbox hosts (distinct 127.0.x.y addresses, served by the
sandbox's sshds, as the plain /bin/sh user opsd-sandbox):
  opsd           `opsd run --max-concurrency min(N, 100)` (release; the peers' pool), target resolved
                 from moto by tag (DescribeInstances included)
  opsd-hosts     the same with `--hosts-file` (the SSH part alone)
  opsd-eic       `opsd run` as opsd, keyless: `auth = "instance-connect"` (a key made for the run, pushed
                 to each host with SendSSHPublicKey) and `host_keys = "console"` (each host's key read
                 from GetConsoleOutput), cold: the console keys kept from the last run are deleted first,
                 so every host costs both API calls. The sandbox sshd asks for the pushed key through
                 its AuthorizedKeysCommand (a Python process per connection, as the EC2 Instance
                 Connect agent runs a script per connection), which shows in its CPU.
  parallel-ssh   ParallelSSHClient (libssh2), pool size min(N, 100)
  ansible        `ansible all -m raw -f 100`, host key checking off (as users run it), no ControlPersist
                 (every run connects afresh, as the others do)
  xargs-ssh      `xargs -P 100 ssh` (OpenSSH, curve25519-sha256)
Runs are interleaved (each round runs every tool once, in a rotating order) so noise hits all alike.
Per tool and N: wall time (median, min), client CPU seconds, client peak RSS (the whole process tree,
sampled every 10 ms), sshd CPU seconds, hosts OK. The floor: sshd CPU per connection measured alone
(sequential connections), times N, divided by the cores. Writes bench/fanout.md.
Traffic goes to loopback only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from sandbox_common import ROOT, SANDBOX, sandbox_env, workspace

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


ENV = sandbox_env()
USER, PORT = ENV["OPSD_SANDBOX_SSH_USER"], ENV["OPSD_SANDBOX_SSH_PORT"]
KEY, KNOWN = ENV["OPSD_SANDBOX_SSH_KEY"], ENV["OPSD_SANDBOX_KNOWN_HOSTS"]


def fleet(n, tag):
    out = subprocess.run(
        [os.path.join(ROOT, "scripts", "sandbox"), "fleet", str(n), "--tag", f"Bench={tag}"],
        check=True, capture_output=True, text=True,
    )
    return [i["address"] for i in json.loads(out.stdout)["instances"]]


def proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return fields  # fields[1] = ppid, [11..14] = utime, stime, cutime, cstime


def sshd_cpu():
    """CPU seconds of every sandbox sshd (listeners and their reaped session children)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"sshd" in cmd and SANDBOX.encode() in cmd:
            st = proc_stat(pid)
            if st:
                total += sum(int(x) for x in st[11:15])
    return total / TICK


def tree_rss_kib(root_pid):
    """Resident memory of a process and all its descendants, KiB."""
    children = {}
    rss = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        st = proc_stat(pid)
        if not st:
            continue
        children.setdefault(int(st[1]), []).append(int(pid))
        rss[int(pid)] = int(st[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root_pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def measure(cmd, env=None, stdin=None):
    """Run cmd; return (wall s, client CPU s, peak tree RSS MiB, stdout)."""
    before = os.times()
    sshd_before = sshd_cpu()
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_kib(p.pid))
            done.wait(0.01)

    t = threading.Thread(target=sample)
    t.start()
    out, _ = p.communicate(stdin)
    wall = time.monotonic() - start
    done.set()
    t.join()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, peak[0] / 1024, sshd_cpu() - sshd_before, out


def tools(n, addrs, tag, work):
    hosts_file = os.path.join(work, f"hosts-{n}")
    with open(hosts_file, "w") as f:
        f.write("\n".join(addrs) + "\n")
    cfg = os.path.join(work, "opsd.toml")
    opsd = os.environ["OPSD_BIN"]
    env = dict(ENV, OPSD_CONFIG=cfg)
    pssh_script = os.path.join(work, "pssh_run.py")
    inv = os.path.join(work, f"inventory-{n}")
    with open(inv, "w") as f:
        f.write("[all]\n" + "\n".join(addrs) + "\n[all:vars]\n")
        f.write(f"ansible_user={USER}\nansible_port={PORT}\nansible_ssh_private_key_file={KEY}\n")
        f.write("ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n")
    # No ControlPersist: each run opens fresh connections, as the other tools do (and as a scheduled
    # run minutes after the last one would).
    ansible_env = dict(ENV, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_LOCAL_TEMP=os.path.join(work, "ansible"),
                       ANSIBLE_REMOTE_TEMP="/tmp", ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="oneline")
    venv_bin = os.path.dirname(sys.executable)
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={KNOWN}", "-o", "StrictHostKeyChecking=yes",
           "-o", "KexAlgorithms=curve25519-sha256", "-i", KEY, "-p", PORT, "-l", USER]
    return {
        "opsd": (lambda: measure([opsd, "run", "bench", "--output", "json", "--max-concurrency", str(min(n, 100))], env=env),
                 lambda out: json.loads(out)["counts"]["ok"]),
        "opsd-hosts": (lambda: measure([opsd, "run", "bench", "--output", "json", "--max-concurrency", str(min(n, 100)),
                                        "--hosts-file", hosts_file], env=env),
                       lambda out: json.loads(out)["counts"]["ok"]),
        "opsd-eic": (lambda: cold(work) or measure([opsd, "run", "bench-eic", "--output", "json", "--max-concurrency",
                                                    str(min(n, 100))], env=env),
                     lambda out: json.loads(out)["counts"]["ok"]),
        "parallel-ssh": (lambda: measure([sys.executable, pssh_script, hosts_file, str(min(n, 100))], env=ENV),
                         lambda out: int(out.strip() or 0)),
        "ansible": (lambda: measure([os.path.join(venv_bin, "ansible"), "all", "-i", inv, "-m", "raw", "-a", "uname -r",
                                     "-f", "100"], env=ansible_env),
                    lambda out: sum(1 for l in out.splitlines() if "| CHANGED" in l or "| SUCCESS" in l)),
        "xargs-ssh": (lambda: measure(["xargs", "-P", "100", "-I{}"] + ssh + ["{}", "uname -r"], env=ENV,
                                      stdin="\n".join(addrs) + "\n"),
                      lambda out: sum(1 for l in out.splitlines() if l.strip())),
    }


def cold(work):
    """Forget the console host keys the last opsd-eic run kept, so this one reads every console."""
    import sqlite3
    db = os.path.join(work, "state", "opsd.db")
    if os.path.exists(db):
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM instance_host_keys")


PSSH = '''
import sys
from pssh.clients import ParallelSSHClient
hosts = [h.strip() for h in open(sys.argv[1]) if h.strip()]
c = ParallelSSHClient(hosts, user=%r, pkey=%r, port=%s, pool_size=int(sys.argv[2]), num_retries=1, timeout=30)
out = c.run_command("uname -r", stop_on_errors=False)
c.join(out)
ok = 0
for o in out:
    if o.exception is None and o.exit_code == 0 and list(o.stdout):
        ok += 1
print(ok)
'''


def floor_per_connection(addrs, k=30):
    """sshd CPU per connection, connections made one at a time (nothing competing)."""
    before = sshd_cpu()
    for i in range(k):
        subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={KNOWN}",
                        "-o", "KexAlgorithms=curve25519-sha256", "-i", KEY, "-p", PORT, "-l", USER,
                        addrs[i % len(addrs)], "uname -r"], check=True, capture_output=True)
    return (sshd_cpu() - before) / k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,50,200,500")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tools", default="opsd,opsd-hosts,parallel-ssh,ansible,xargs-ssh")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "fanout.md"))
    ap.add_argument("--output-check", type=int, metavar="N",
                    help="instead: N hosts each print 1 MiB; opsd's peak RSS against `uname -r` on the same hosts")
    args = ap.parse_args()
    if args.output_check:
        return output_check(args.output_check)
    sizes = [int(x) for x in args.sizes.split(",")]
    names = args.tools.split(",")
    work = workspace("opsd-fanout-")
    with open(os.path.join(work, "pssh_run.py"), "w") as f:
        f.write(PSSH % (USER, KEY, PORT))
    rows = []
    for n in sizes:
        tag = f"fanout-{n}-{os.getpid()}"
        addrs = fleet(n, tag)
        with open(os.path.join(work, "jobs", "bench.toml"), "w") as f:
            f.write(f'[target]\ntags = {{ Bench = "{tag}" }}\n[run]\ncommands = ["uname -r"]\nmax_errors = "100%"\n')
        with open(os.path.join(work, "jobs", "bench-eic.toml"), "w") as f:
            f.write(f'[target]\ntags = {{ Bench = "{tag}" }}\n[ssh]\nauth = "instance-connect"\nhost_keys = "console"\n'
                    '[run]\ncommands = ["uname -r"]\nmax_errors = "100%"\n')
        per_conn = floor_per_connection(addrs)
        floor = per_conn * n / CORES
        table = tools(n, addrs, tag, work)
        results = {t: [] for t in names}
        for r in range(args.runs):
            order = names[r % len(names):] + names[: r % len(names)]
            for t in order:
                run, ok_of = table[t]
                wall, cpu, rss, sshd, out = run()
                try:
                    ok = ok_of(out)
                except Exception:
                    ok = 0
                results[t].append((wall, cpu, rss, sshd, ok))
                print(f"N={n} {t}: {wall:.2f}s wall, {cpu:.2f}s CPU, {rss:.0f} MiB, sshd {sshd:.2f}s, {ok}/{n} ok", file=sys.stderr)
        rows.append((n, floor, per_conn, results))
    write(rows, names, args)


def output_check(n, runs=3):
    """Each host prints 1 MiB; with output_limit 64 KiB per stream, opsd keeps at most 128 KiB per host,
    so its peak RSS may exceed that of a quiet run by at most cap × concurrency."""
    work = workspace("opsd-fanout-out-")
    addrs = fleet(n, f"fanout-out-{os.getpid()}")
    hosts = os.path.join(work, "hosts")
    with open(hosts, "w") as f:
        f.write("\n".join(addrs) + "\n")
    env = dict(ENV, OPSD_CONFIG=os.path.join(work, "opsd.toml"))
    loud = "head -c 1048576 /dev/zero | tr '\\\\0' x"
    peaks = {}
    for name, cmd in (("quiet", "uname -r"), ("1 MiB per host", loud)):
        with open(os.path.join(work, "jobs", "out.toml"), "w") as f:
            f.write(f'[target]\ntags = {{ X = "y" }}\n[run]\ncommands = ["{cmd}"]\noutput_limit = "64KiB"\nmax_errors = "100%"\n')
        rs = []
        for _ in range(runs):
            wall, cpu, rss, sshd, out = measure([os.environ["OPSD_BIN"], "run", "out", "--output", "json",
                                                 "--max-concurrency", str(n), "--hosts-file", hosts], env=env)
            doc = json.loads(out)
            rs.append((rss, doc["counts"]["ok"], sum(h["stdout_dropped"] for h in doc["hosts"])))
        peaks[name] = rs
    cap = 2 * 64 / 1024 * n  # MiB: two streams of 64 KiB per host, all hosts at once
    q = max(r[0] for r in peaks["quiet"])
    l = max(r[0] for r in peaks["1 MiB per host"])
    print(f"| hosts | quiet peak RSS MiB | 1 MiB per host: peak RSS MiB | growth MiB | cap × concurrency MiB | bytes dropped per run |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {n} | {q:.1f} | {l:.1f} | {l - q:.1f} | {cap:.1f} | {peaks['1 MiB per host'][0][2]} |")


def machine():
    """CPU model, cores, memory and kernel, for the table's header."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    u = os.uname()
    return f"{model}, {CORES} cores, {mem_kib / 1024 / 1024:.0f} GiB, {u.sysname} {u.release}"


def write(rows, names, args):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = [f"<!-- bench/fanout on {time.strftime('%Y-%m-%d')}, commit {commit}, {machine()}, "
             f"{args.runs} interleaved runs -->", ""]
    lines.append("| N | tool | wall median s | wall min s | client CPU s | client peak RSS MiB | sshd CPU s | hosts OK | wall ÷ opsd-hosts |")
    lines.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, floor, per_conn, results in rows:
        ref = statistics.median(r[0] for r in results.get("opsd-hosts", results[names[0]]))
        for t in names:
            rs = results[t]
            med = statistics.median(r[0] for r in rs)
            lines.append(
                f"| {n} | {t} | {med:.2f} | {min(r[0] for r in rs):.2f} | {statistics.median(r[1] for r in rs):.2f} | "
                f"{max(r[2] for r in rs):.0f} | {statistics.median(r[3] for r in rs):.2f} | "
                f"{min(r[4] for r in rs)}/{n} | {med / ref:.2f} |")
        lines.append(f"| {n} | floor (sshd CPU {per_conn * 1000:.1f} ms/connection × N ÷ {CORES} cores) | {floor:.2f} | | | | | | {floor / ref:.2f} |")
    lines += ["", "Ratios, tool ÷ opsd-hosts (medians; peak RSS: the largest of the runs; below 1 means less than opsd):", ""]
    lines.append("| N | tool | wall | client CPU | client peak RSS | sshd CPU |")
    lines.append("| ---: | --- | ---: | ---: | ---: | ---: |")
    for n, floor, per_conn, results in rows:
        base = results.get("opsd-hosts", results[names[0]])
        ref = (statistics.median(r[0] for r in base), statistics.median(r[1] for r in base),
               max(r[2] for r in base), statistics.median(r[3] for r in base))
        for t in names:
            rs = results[t]
            got = (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                   max(r[2] for r in rs), statistics.median(r[3] for r in rs))
            cells = " | ".join(f"{g / b:.2f}" if b > 0 else "–" for g, b in zip(got, ref))
            lines.append(f"| {n} | {t} | {cells} |")
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
