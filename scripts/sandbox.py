#!/usr/bin/env python3
"""The local fleet behind opsd's demo, tests and benchmarks (run it through scripts/sandbox).

Real parts only: moto's server is the AWS endpoint, Debian's OpenSSH serves the instances, and
DynamoDB Local (AWS's own emulator, from the npm package amplify-dynamodb-simulator, run by Debian's
Java) is the DynamoDB endpoint for opsd's cluster mode.
Everything listens on loopback. Instances get private IPs in 127.0.0.0/16 (all of 127/8 is loopback
on Linux), so opsd reaches them with its normal code path.

Why one sshd per 16 addresses: sshd accepts at most 16 ListenAddress entries, and binding each
instance's own address (instead of 0.0.0.0) keeps every other loopback address free, so a test can
have an instance where nothing listens, or where a test's own socket never answers.

State is in target/sandbox/state.json, guarded by a lock file so parallel tests can call `fleet`.
"""
import argparse
import fcntl
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SB = os.path.join(ROOT, "target", "sandbox")
STATE = os.path.join(SB, "state.json")
KEYS = os.path.join(SB, "keys")
ENV_FILE = os.path.join(SB, "env")
SSH_USER = "opsd-sandbox"  # plain /bin/sh user: root's shell rc here is slow and would be measured
REGION = "us-east-1"
AMI = "ami-760aaa0f"  # Amazon Linux in moto's catalogue (ami-12c6146b is a Windows image there)
ADDRS_PER_SUBNET = 250  # .4 .. .253 of each /24; AWS reserves .0-.3 and .255
LISTEN_PER_SSHD = 16  # sshd's MAX_LISTEN_SOCKS
START_WAIT_S = 20
# DynamoDB Local, installed by scripts/sandbox with npm (the jar is bundled by this package).
DYNAMODB_DIR = os.path.join(SB, "dynamodb", "node_modules", "amplify-dynamodb-simulator", "emulator")


# Everything here talks to loopback only: never through a proxy from the environment.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.0/8,localhost"


def log(msg):
    print(f"sandbox: {msg}", file=sys.stderr)


def load_state():
    if os.path.exists(STATE):
        with open(STATE) as f:
            return json.load(f)
    return {"next_addr": 0, "sshds": []}


def save_state(state):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, STATE)


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie or a recycled pid: check it is still what we started.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        return b"sshd" in cmd or b"moto_server" in cmd or b"DynamoDBLocal" in cmd or b"ddb_proxy" in cmd
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(host, port, what):
    deadline = time.time() + START_WAIT_S
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"sandbox: {what} did not listen on {host}:{port} within {START_WAIT_S}s; see logs in {SB}")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_key(path, comment):
    if not os.path.exists(path):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return path


AUTH_DIR = f"/var/lib/{SSH_USER}-keys"
# sshd runs an AuthorizedKeysCommand only from a path whose every directory is root-owned and
# writable by no one else (a clean clone under /tmp is not): the script is installed here.
EIC_COMMAND = "/usr/local/libexec/opsd-sandbox/eic_authorized_keys"


def install_eic_command():
    """Install the AuthorizedKeysCommand that serves EC2 Instance Connect keys (see the script)."""
    os.makedirs(os.path.dirname(EIC_COMMAND), mode=0o755, exist_ok=True)
    with open(os.path.join(ROOT, "scripts", "moto_ext", "eic_authorized_keys"), "rb") as f:
        body = f.read()
    tmp = f"{EIC_COMMAND}.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(body)
    os.chmod(tmp, 0o755)
    os.replace(tmp, EIC_COMMAND)


def authorized_keys():
    import hashlib
    return os.path.join(AUTH_DIR, hashlib.sha1(SB.encode()).hexdigest()[:12] + ".pub")


def ensure_user():
    if subprocess.run(["id", SSH_USER], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0:
        sys.exit(f"sandbox: user {SSH_USER} is missing; run scripts/sandbox up as root once to create it")
    run(["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{SSH_USER}",
         "--shell", "/bin/sh", SSH_USER])
    # sshd (UsePAM no) refuses every login to an account whose password field starts with '!'.
    run(["usermod", "-p", "*", SSH_USER])


def boto(service, st=None):
    import boto3  # from the sandbox venv
    st = st or load_state()
    port = st["dynamodb_port"] if service == "dynamodb" else st["moto_port"]
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def cmd_up(_args):
    if os.geteuid() != 0:
        sys.exit("sandbox: `up` needs root: it starts sshd (privilege separation) and creates the user "
                 f"{SSH_USER}; run it as root or with sudo")
    os.makedirs(KEYS, exist_ok=True)
    os.makedirs(os.path.join(SB, "sshd"), exist_ok=True)
    os.makedirs(os.path.join(SB, "state"), exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    ensure_user()
    ensure_key(os.path.join(KEYS, "host_ed25519"), "opsd-sandbox-host")
    client = ensure_key(os.path.join(KEYS, "client_ed25519"), "opsd-sandbox-client")
    # sshd reads AuthorizedKeysFile as the user, who cannot enter a checkout under /root (mode 0700):
    # keep this sandbox's copy in a root-owned, world-readable directory beside the user's home,
    # named after the sandbox directory.
    os.makedirs(AUTH_DIR, mode=0o755, exist_ok=True)
    os.chmod(AUTH_DIR, 0o755)
    with open(client + ".pub") as src, open(authorized_keys(), "w") as dst:
        dst.write(src.read())
    os.chmod(authorized_keys(), 0o644)
    open(os.path.join(KEYS, "known_hosts"), "a").close()
    install_eic_command()

    st = load_state()
    if not alive(st.get("moto_pid")):
        port = free_port()
        logf = open(os.path.join(SB, "moto.log"), "ab")
        py = os.path.join(SB, "venv", "bin", "python")
        # The console output of sandbox instances carries this host key (scripts/moto_ext/instance_connect.py).
        env = dict(os.environ, MOTO_EXT_HOST_KEY=os.path.join(KEYS, "host_ed25519.pub"))
        proc = subprocess.Popen([py, os.path.join(ROOT, "scripts", "moto_server.py"), "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=logf, stderr=logf, start_new_session=True, env=env)
        st["moto_pid"], st["moto_port"] = proc.pid, port
        # A new moto has no instances: forget addresses and sshds of an earlier one.
        forget_fleet(st)
        save_state(st)
        wait_listening("127.0.0.1", port, "moto")
        deadline = time.time() + START_WAIT_S
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2).read()
                break
            except Exception:
                if time.time() > deadline:
                    sys.exit(f"sandbox: moto on port {port} does not answer; see {SB}/moto.log")
                time.sleep(0.1)
    if not alive(st.get("dynamodb_pid")):
        start_dynamodb(st)
    if not alive(st.get("ddb_proxy_pid")):
        start_ddb_proxy(st)
    if not st.get("ssh_port"):
        st["ssh_port"] = free_port()
    save_state(st)
    write_config(st)
    write_env(st)
    print(ENV_FILE)


def start_dynamodb(st):
    """DynamoDB Local, in memory, one database for every access key and region (-sharedDb)."""
    jar = os.path.join(DYNAMODB_DIR, "DynamoDBLocal.jar")
    if not os.path.exists(jar):
        sys.exit(f"sandbox: {jar} is missing; scripts/sandbox up installs it with npm")
    port = free_port()
    logf = open(os.path.join(SB, "dynamodb.log"), "ab")
    proc = subprocess.Popen(["java", f"-Djava.library.path={DYNAMODB_DIR}/DynamoDBLocal_lib", "-jar", jar,
                             "-inMemory", "-sharedDb", "-port", str(port)],
                            stdout=logf, stderr=logf, start_new_session=True, cwd=DYNAMODB_DIR)
    st["dynamodb_pid"], st["dynamodb_port"] = proc.pid, port
    save_state(st)
    wait_listening("127.0.0.1", port, "DynamoDB Local")
    deadline = time.time() + START_WAIT_S
    while True:
        try:
            boto("dynamodb", st).list_tables()
            return
        except Exception as e:
            if time.time() > deadline:
                sys.exit(f"sandbox: DynamoDB Local on port {port} does not answer ({e}); see {SB}/dynamodb.log")
            time.sleep(0.2)


def start_ddb_proxy(st):
    """scripts/ddb_proxy.py in front of DynamoDB Local: writes to a table named `…throttle<N>…` are
    refused N % of the time as AWS refuses them under load; everything else passes through."""
    port = free_port()
    logf = open(os.path.join(SB, "ddb_proxy.log"), "ab")
    py = os.path.join(SB, "venv", "bin", "python")
    proc = subprocess.Popen([py, os.path.join(ROOT, "scripts", "ddb_proxy.py"), str(port), str(st["dynamodb_port"])],
                            stdout=logf, stderr=logf, start_new_session=True)
    st["ddb_proxy_pid"], st["ddb_proxy_port"] = proc.pid, port
    save_state(st)
    wait_listening("127.0.0.1", port, "the DynamoDB proxy")


def opsd_config(jobs_dir, state_dir, st=None):
    """opsd's config for the sandbox fleet, with the given jobs and state directories (what
    `up` writes to target/sandbox/opsd.toml, and what benchmarks use for workspaces of their own)."""
    st = st or load_state()
    return f"""# Written by scripts/sandbox: opsd pointed at the local sandbox fleet.
jobs_dir = "{jobs_dir}"
state_dir = "{state_dir}"

[aws]
region = "{REGION}"

[ssh]
user = "{SSH_USER}"
port = {st['ssh_port']}
identity_file = "{KEYS}/client_ed25519"
known_hosts = "{KEYS}/known_hosts"
connect_timeout = "10s"
"""


def write_config(st):
    with open(os.path.join(SB, "opsd.toml"), "w") as f:
        f.write(opsd_config(os.path.join(ROOT, "jobs"), f"{SB}/state", st))


def write_env(st):
    lines = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{st['moto_port']}",
        # DynamoDB is DynamoDB Local (AWS's emulator), behind scripts/ddb_proxy.py (which throttles
        # the tables that ask for it), as a user points the SDK at any endpoint.
        "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{st['ddb_proxy_port']}",
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # Never ask the instance metadata service (a non-loopback address) for anything.
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.0/8,localhost",
        "OPSD_CONFIG": os.path.join(SB, "opsd.toml"),
        "OPSD_SANDBOX_DIR": SB,
        "OPSD_SANDBOX_SSH_USER": SSH_USER,
        "OPSD_SANDBOX_SSH_PORT": str(st["ssh_port"]),
        "OPSD_SANDBOX_SSH_KEY": os.path.join(KEYS, "client_ed25519"),
        "OPSD_SANDBOX_KNOWN_HOSTS": os.path.join(KEYS, "known_hosts"),
        # For tests of replicas whose wall clocks are off (LD_PRELOAD with FAKETIME="+3s").
        "OPSD_SANDBOX_LIBFAKETIME": next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), ""),
    }
    with open(ENV_FILE, "w") as f:
        for k, v in lines.items():
            f.write(f"{k}={v}\n")


def read_env():
    """The env file (AWS endpoint and credentials, SSH user, port and keys) as a dict."""
    if not os.path.exists(ENV_FILE):
        sys.exit("sandbox: not up; run scripts/sandbox up")
    with open(ENV_FILE) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def ensure_network(st, subnet_no):
    ec2 = boto("ec2")
    if "vpc" not in st:
        st["vpc"] = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnets = st.setdefault("subnets", {})
    if str(subnet_no) not in subnets:
        sn = ec2.create_subnet(VpcId=st["vpc"], CidrBlock=f"127.0.{subnet_no}.0/24",
                               AvailabilityZone=REGION + "a")
        subnets[str(subnet_no)] = sn["Subnet"]["SubnetId"]
    return subnets[str(subnet_no)]


def addr_of(index):
    subnet_no = 1 + index // ADDRS_PER_SUBNET
    if subnet_no > 254:
        sys.exit("sandbox: out of addresses; run scripts/sandbox down && scripts/sandbox up")
    return subnet_no, f"127.0.{subnet_no}.{4 + index % ADDRS_PER_SUBNET}"


def start_sshd(st, addrs, auth, host_key, name):
    cfg = os.path.join(SB, "sshd", f"{name}.conf")
    keys = authorized_keys() if auth == "ok" else "/dev/null"
    listen = "".join(f"ListenAddress {a}\n" for a in addrs)
    # EC2 Instance Connect: keys pushed with SendSSHPublicKey, for 60 s, as the instance's agent serves them.
    # sshd 9.2 has no token for the address a client connected to, so each address gets a Match
    # block that names it (Match blocks end the file).
    eic, matches = "", ""
    if auth == "ok":
        eic = f"AuthorizedKeysCommandUser {SSH_USER}\n"
        matches = "".join(f"Match LocalAddress {a}\n"
                          f"    AuthorizedKeysCommand {EIC_COMMAND} 127.0.0.1 {st['moto_port']} %u {a}\n"
                          for a in addrs)
    with open(cfg, "w") as f:
        f.write(f"""Port {st['ssh_port']}
{listen}HostKey {host_key}
PidFile {SB}/sshd/{name}.pid
AuthorizedKeysFile {keys}
{eic}AllowUsers {SSH_USER}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UseDNS no
PrintMotd no
LogLevel ERROR
LoginGraceTime 30
# A fan-out opens hundreds of connections at once: the default 10:30:100 would drop them.
MaxStartups 1000:30:1000
MaxSessions 100
{matches}""")
    logf = open(os.path.join(SB, "sshd", f"{name}.log"), "ab")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg], stdout=logf, stderr=logf,
                            start_new_session=True)
    for a in addrs:
        wait_listening(a, st["ssh_port"], f"sshd {name}")
    return {"name": name, "pid": proc.pid, "addrs": addrs, "auth": auth, "host_key": host_key}


def stop(pid):
    """SIGTERM to the process group (sshd's sessions too), then wait, so its addresses are free again."""
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + START_WAIT_S
    while alive(pid) and time.time() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)


def forget_fleet(st):
    """No instance exists any more: stop their sshds, free their addresses, empty known_hosts."""
    stop_sshds(st)
    st["next_addr"] = 0
    st.pop("vpc", None)
    st["subnets"] = {}
    with open(os.path.join(KEYS, "known_hosts"), "w"):
        pass


def stop_sshds(st):
    for s in st.get("sshds", []):
        stop(s["pid"])
    st["sshds"] = []


def host_pub(path):
    with open(path + ".pub") as f:
        kind, b64 = f.read().split()[:2]
    return f"{kind} {b64}"


def cmd_fleet(args):
    st = load_state()
    if not alive(st.get("moto_pid")):
        sys.exit("sandbox: moto is not running; run scripts/sandbox up first")
    tags = []
    for t in args.tag:
        if "=" not in t:
            sys.exit(f"sandbox: --tag {t!r}: expected KEY=VALUE")
        k, v = t.split("=", 1)
        tags.append({"Key": k, "Value": v})
    first = st["next_addr"]
    st["next_addr"] += args.count
    planned = [addr_of(i) for i in range(first, first + args.count)]
    subnets = {n: ensure_network(st, n) for n, _ in planned}
    save_state(st)

    ec2 = boto("ec2")

    def launch(item):
        n, addr = item
        spec = {"ImageId": AMI, "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1,
                "SubnetId": subnets[n], "PrivateIpAddress": addr}
        if tags:
            spec["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags}]
        inst = ec2.run_instances(**spec)["Instances"][0]
        return {"id": inst["InstanceId"], "address": addr}

    with ThreadPoolExecutor(8) as pool:
        instances = list(pool.map(launch, planned))
    ids = [i["id"] for i in instances]
    if args.state == "stopped" and ids:
        ec2.stop_instances(InstanceIds=ids)
    elif args.state == "terminated" and ids:
        ec2.terminate_instances(InstanceIds=ids)

    addrs = [a for _, a in planned]
    main_key = os.path.join(KEYS, "host_ed25519")
    with open(os.path.join(KEYS, "known_hosts"), "a") as f:
        for a in addrs:
            f.write(f"[{a}]:{st['ssh_port']} {host_pub(main_key)}\n")
    pids = []
    if args.listen:
        for i in range(0, len(addrs), LISTEN_PER_SSHD):
            chunk = addrs[i:i + LISTEN_PER_SSHD]
            name = chunk[0].replace(".", "_")
            key = main_key
            if args.host_key == "other":
                key = ensure_key(os.path.join(KEYS, f"host_{name}"), "opsd-sandbox-other")
            s = start_sshd(st, chunk, args.auth, key, name)
            st["sshds"].append(s)
            pids.append(s["pid"])
    save_state(st)
    json.dump({"instances": instances, "sshd_pids": pids, "ssh_port": st["ssh_port"]}, sys.stdout)
    print()


def cmd_serve(args):
    """Serve instances that exist already (launched by Auto Scaling, say) with the sandbox sshd."""
    st = load_state()
    main_key = os.path.join(KEYS, "host_ed25519")
    pids = []
    with open(os.path.join(KEYS, "known_hosts"), "a") as f:
        for a in args.addr:
            f.write(f"[{a}]:{st['ssh_port']} {host_pub(main_key)}\n")
    for i in range(0, len(args.addr), LISTEN_PER_SSHD):
        chunk = args.addr[i:i + LISTEN_PER_SSHD]
        s = start_sshd(st, chunk, "ok", main_key, chunk[0].replace(".", "_"))
        st["sshds"].append(s)
        pids.append(s["pid"])
    save_state(st)
    json.dump({"sshd_pids": pids, "ssh_port": st["ssh_port"]}, sys.stdout)
    print()


def cmd_rekey(args):
    st = load_state()
    for s in st["sshds"]:
        if args.addr in s["addrs"]:
            stop(s["pid"])
            key = os.path.join(KEYS, f"host_{s['name']}_rekeyed_{int(time.time() * 1000)}")
            ensure_key(key, "opsd-sandbox-rekeyed")
            st["sshds"].remove(s)
            st["sshds"].append(start_sshd(st, s["addrs"], s["auth"], key, s["name"]))
            save_state(st)
            print(host_pub(key))
            return
    sys.exit(f"sandbox: no sandbox sshd serves {args.addr}")


def cmd_reset(_args):
    """An empty AWS and no fleet: moto's state is wiped, the fleet's sshds are stopped."""
    st = load_state()
    if not alive(st.get("moto_pid")):
        sys.exit("sandbox: moto is not running; run scripts/sandbox up first")
    req = urllib.request.Request(f"http://127.0.0.1:{st['moto_port']}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    if alive(st.get("dynamodb_pid")):
        ddb = boto("dynamodb", st)
        for name in ddb.list_tables().get("TableNames", []):
            ddb.delete_table(TableName=name)
    forget_fleet(st)
    save_state(st)
    log("reset: moto and DynamoDB Local are empty and no instance is served")


def cmd_down(_args):
    st = load_state()
    stop_sshds(st)
    stop(st.get("moto_pid"))
    stop(st.get("dynamodb_pid"))
    stop(st.get("ddb_proxy_pid"))
    st["moto_pid"] = st["dynamodb_pid"] = st["ddb_proxy_pid"] = None
    save_state(st)
    log("stopped moto, DynamoDB Local and every sandbox sshd")


def cmd_status(_args):
    st = load_state()
    up = alive(st.get("moto_pid"))
    ddb = alive(st.get("dynamodb_pid")) and alive(st.get("ddb_proxy_pid"))
    print(f"moto: {'up on port ' + str(st.get('moto_port')) if up else 'down'}; "
          f"DynamoDB Local: {'up on port ' + str(st.get('dynamodb_port')) if ddb else 'down'}; "
          f"sshd processes: {sum(alive(s['pid']) for s in st.get('sshds', []))}")
    sys.exit(0 if up and ddb else 1)


def cmd_env(_args):
    if not os.path.exists(ENV_FILE):
        sys.exit("sandbox: not up; run scripts/sandbox up")
    print(ENV_FILE)


def main():
    p = argparse.ArgumentParser(prog="scripts/sandbox", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start moto, make keys, write the env file (idempotent)").set_defaults(f=cmd_up)
    fl = sub.add_parser("fleet", help="create N instances served by sshd on their own 127.0.x.y")
    fl.add_argument("count", type=int)
    fl.add_argument("--tag", action="append", default=[], help="KEY=VALUE; repeat for more tags")
    fl.add_argument("--state", choices=["running", "stopped", "terminated"], default="running")
    fl.add_argument("--auth", choices=["ok", "reject"], default="ok",
                    help="reject: the sshd accepts no client key")
    fl.add_argument("--host-key", choices=["main", "other"], default="main",
                    help="other: serve a host key that known_hosts does not list")
    fl.add_argument("--no-listen", dest="listen", action="store_false",
                    help="start no sshd: nothing listens on these addresses")
    fl.set_defaults(f=cmd_fleet)
    sv = sub.add_parser("serve", help="serve ADDR (an instance's private address in 127/8) with the sandbox sshd")
    sv.add_argument("addr", nargs="+")
    sv.set_defaults(f=cmd_serve)
    rk = sub.add_parser("rekey", help="restart the sshd serving ADDR with a new host key")
    rk.add_argument("addr")
    rk.set_defaults(f=cmd_rekey)
    sub.add_parser("reset", help="empty moto and stop the fleet's sshds (moto keeps running)").set_defaults(f=cmd_reset)
    sub.add_parser("down", help="stop moto and every sandbox sshd").set_defaults(f=cmd_down)
    sub.add_parser("status", help="exit 0 when moto is up").set_defaults(f=cmd_status)
    sub.add_parser("env", help="print the env file's path").set_defaults(f=cmd_env)
    args = p.parse_args()
    os.makedirs(SB, exist_ok=True)
    with open(os.path.join(SB, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        args.f(args)


if __name__ == "__main__":
    main()
