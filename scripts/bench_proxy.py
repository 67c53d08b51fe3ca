#!/usr/bin/env python3
"""What veil adds to a request's latency: side-by-side load test (`make bench-proxy`).

usage: bench_proxy.py [--rates 50,500,2000] [--classifier-rates 50,100,250] [--secs 10]
                      [--rounds 2] [--setups patterns,default] [--json OUT]
       bench_proxy.py --soak SECS [--soak-rate 1000] [--soak-classifier-rate 80] [--setups …]
       bench_proxy.py --compare OTHER_VEIL_BINARY [...]
       bench_proxy.py --stages RATE [--setups …]

Starts a mock OpenAI upstream (examples/mock_upstream.rs) and veil in front of it (release
build, durable SQLite audit in a scratch directory, the shipped `default` policy), then drives
both with `oha` at fixed rates, a 1 KB prompt without sensitive values, non-streaming. Rounds
alternate: direct to the mock, then through veil, at the same rate, so that a VM's drift hits
both alike. Overhead = veil's latency minus the mock's at the same percentile (the median over
rounds). Setups: `patterns` (classifier.dir empty: the pattern tier only) and `default`
(patterns + the token classifier), both with the classifier's segment cache off (oha sends one
body over and over; examples/conversation_bench.rs measures the cache), and `bare`
(examples/bare_proxy.rs in veil's place: a forwarding proxy on the same stack doing nothing
else, the floor of any proxy hop on the machine; not in the default setups). `oha` is
installed with `cargo install oha` when missing.
--compare runs a second veil binary (an older build, say) beside this one with the same setup:
each round then measures direct, the other binary and this one, so both are compared in one
period of the VM.
--stages drives a freshly started veil at RATE for --secs and prints where its time went: the
p50/p99 of the stage histograms on /metrics (decide, scan, audit waits, upstream, handler).
--soak drives veil alone at one rate for SECS seconds per setup and samples its resident memory
(VmRSS) every 10 s: memory should be flat after warm-up.
Targets (issue 27) are judged on these figures, never in timed tests.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
KEY = "veil-dev-key"
KEY_SHA256 = "959033653e818aeea46c897d42b51ec9b5ab2e0094c06d10c2d65c5d8f47f7ef"
# About 1 KB of clinical text with nothing any policy acts on.
PROMPT = (
    "Summarise the current guidance on managing community-acquired pneumonia in adults who are "
    "otherwise healthy. Cover how severity is assessed at the first visit, which findings on "
    "examination and which laboratory results point towards admission rather than treatment at "
    "home, and which first-line antibiotics are preferred when there are no risk factors for "
    "resistant organisms. Explain how long treatment usually lasts, what follow-up is advised "
    "when symptoms improve slowly, and which warning signs should make a patient come back "
    "early. Mention the role of chest imaging, when repeat imaging is useful and when it is not, "
    "and how vaccination against pneumococcus and influenza fits into prevention afterwards. "
    "Keep the answer practical, in short paragraphs, suitable for a clinician reviewing options "
    "before a consultation, and note where recommendations differ between major guidelines."
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, secs=120):
    end = time.time() + secs
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer within {secs} s")


def wait_port(port, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} did not open within {secs} s")


def ensure_oha():
    oha = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")
    if not os.path.exists(oha):
        subprocess.run(["cargo", "install", "oha", "--locked"], check=True)
    return oha


def veil_config(work, port, mock_port, classifier):
    ort = os.path.join(REPO, ".cache/onnxruntime/libonnxruntime.so.1.31.1")
    return f'''
hmac_key_env = "VEIL_HMAC_KEY"
[server]
listen = "127.0.0.1:{port}"
[audit]
url = "sqlite://{work}/audit.db"
[policies]
dir = "{REPO}/policies"
reload_secs = 0
[[upstream]]
name = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"
models = ["gpt-*"]
[local]
model = "{REPO}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[detect]
cache_entries = 0  # oha repeats one body: with the cache, every request after the first would be a hit
[classifier]
dir = "{os.path.join(REPO, 'models/classifier') if classifier else ''}"
ort_library = "{ort}"
[[key]]
id = "bench"
sha256 = "{KEY_SHA256}"
tenant = "bench"
policy = "default"
'''


def oha(binary, url, rate, secs, body_file, auth):
    cmd = [binary, "--no-tui", "--output-format", "json", "-z", f"{secs}s", "-q", str(rate),
           "-c", "64", "-m", "POST", "-H", "Content-Type: application/json", "-D", body_file, url]
    if auth:
        cmd[1:1] = ["-H", f"Authorization: Bearer {KEY}"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    pct = out["latencyPercentiles"]
    codes = out.get("statusCodeDistribution", {})
    return {"p50_ms": pct["p50"] * 1000, "p99_ms": pct["p99"] * 1000,
            "rps": out["summary"]["requestsPerSec"], "ok": codes.get("200", 0),
            "requests": sum(codes.values())}


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def soak(binary, url, rate, secs, body_file, pid, setup):
    """Drives veil at `rate` for `secs` seconds; its resident memory every 10 s."""
    load = subprocess.Popen([binary, "--no-tui", "--output-format", "json", "-z", f"{secs}s", "-q",
                             str(rate), "-c", "64", "-m", "POST", "-H", f"Authorization: Bearer {KEY}",
                             "-H", "Content-Type: application/json", "-D", body_file, url],
                            stdout=subprocess.PIPE, text=True)
    samples, started = [], time.time()
    while load.poll() is None:
        samples.append((round(time.time() - started), round(rss_mb(pid), 1)))
        time.sleep(10)
    out = json.loads(load.stdout.read())
    codes = out.get("statusCodeDistribution", {})
    row = {"setup": setup, "soak_rate": rate, "secs": secs, "rss_mb": samples,
           "served_rps": out["summary"]["requestsPerSec"], "ok": codes.get("200", 0),
           "requests": sum(codes.values())}
    after_warmup = [m for t, m in samples if t >= 60] or [m for _, m in samples]
    print(f"{setup:9} soak {rate} rps for {secs} s: RSS {samples[0][1]} MB at start, "
          f"{after_warmup[0]} MB after 60 s, {samples[-1][1]} MB at the end (min {min(after_warmup)}, "
          f"max {max(after_warmup)} after warm-up); served {row['served_rps']:.1f} rps, "
          f"{row['ok']}/{row['requests']} 200", flush=True)
    return row


def stages(binary, url, rate, secs, body_file, setup, label):
    """One load run, then veil's stage histograms (p50 and p99, ms) from /metrics."""
    load = oha(binary, url, rate, secs, body_file, True)
    text = urllib.request.urlopen(url.replace("/v1/chat/completions", "/metrics")).read().decode()
    found = {}
    for line in text.splitlines():
        m = re.match(r'(veil_(?:decide|scan|audit_wait|upstream|request)_seconds)(?:\{(.*?)\})? (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        q = labels.pop("quantile", None)
        if q in ("0.5", "0.99"):
            name = m.group(1) + "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
            found.setdefault(name, {})[q] = float(m.group(3)) * 1000
    print(f"{setup}/{label} at {rate} rps: client p50 {load['p50_ms']:.3f} p99 {load['p99_ms']:.3f} ms; "
          f"served {load['rps']:.1f} rps", flush=True)
    for name, q in sorted(found.items()):
        print(f"  {name:55} p50 {q.get('0.5', float('nan')):8.3f} ms  p99 {q.get('0.99', float('nan')):8.3f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="50,500,2000")
    ap.add_argument("--classifier-rates", default="50,100,250")
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--setups", default="patterns,default")
    ap.add_argument("--json")
    ap.add_argument("--soak", type=int, default=0)
    ap.add_argument("--soak-rate", type=int, default=1000)
    ap.add_argument("--soak-classifier-rate", type=int, default=80)
    ap.add_argument("--compare", help="another veil binary measured beside this one")
    ap.add_argument("--stages", type=int, default=0, help="print veil's stage latencies at this rate")
    a = ap.parse_args()
    binary = ensure_oha()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "veil", "--example", "mock_upstream",
                    "--example", "bare_proxy"], check=True, cwd=REPO)
    work = tempfile.mkdtemp(prefix="veil-bench-")
    body = os.path.join(work, "body.json")
    with open(body, "w") as f:
        json.dump({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}, f)
    mock_port = free_port()
    procs = [subprocess.Popen([os.path.join(REPO, "target/release/examples/mock_upstream"),
                               f"127.0.0.1:{mock_port}"])]
    results = []
    try:
        direct = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        for setup in a.setups.split(","):
            binaries = [("veil", os.path.join(REPO, "target/release/veil"))]
            if a.compare:
                binaries.insert(0, ("other", os.path.abspath(a.compare)))
            env = {**os.environ, "VEIL_HMAC_KEY": "bench-value-key", "BENCH_UPSTREAM_KEY": "sk-bench",
                   "RUST_LOG": "warn"}
            served = []  # (label, url, process)
            if setup == "bare":
                port = free_port()
                bare = subprocess.Popen([os.path.join(REPO, "target/release/examples/bare_proxy"),
                                         f"127.0.0.1:{port}", direct])
                procs.append(bare)
                through = f"http://127.0.0.1:{port}/v1/chat/completions"
                wait_port(port)
                oha(binary, through, 20, 2, body, False)  # warm-up (and a check that it answers)
                served.append(("bare", through, bare))
                binaries = []
            for label, path in binaries:
                port = free_port()
                d = os.path.join(work, f"{setup}-{label}")
                os.makedirs(d)
                with open(os.path.join(d, "veil.toml"), "w") as f:
                    f.write(veil_config(d, port, mock_port, setup != "patterns"))
                veil = subprocess.Popen([path, "serve", "--config", os.path.join(d, "veil.toml")], env=env, cwd=REPO)
                procs.append(veil)
                wait_http(f"http://127.0.0.1:{port}/healthz")
                through = f"http://127.0.0.1:{port}/v1/chat/completions"
                oha(binary, through, 20, 2, body, True)  # warm-up (and a check that it answers)
                served.append((label, through, veil))
            if a.stages:
                for label, through, veil in served:
                    if label == "bare":
                        continue  # no /metrics
                    stages(binary, through, a.stages, a.secs, body, setup, label)
            elif a.soak:
                rate = a.soak_classifier_rate if setup == "default" else a.soak_rate
                for label, through, veil in served:
                    results.append(soak(binary, through, rate, a.soak, body, veil.pid, setup))
            else:
                rates = a.classifier_rates if setup == "default" else a.rates
                for rate in map(int, rates.split(",")):
                    rounds = []
                    for _ in range(a.rounds):
                        d = oha(binary, direct, rate, a.secs, body, False)
                        rounds.append((d, {label: oha(binary, through, rate, a.secs, body, True)
                                           for label, through, _ in served}))
                    for label, _, _ in served:
                        row = {"setup": setup, "binary": label, "rate": rate}
                        for k in ("p50_ms", "p99_ms"):
                            row[f"direct_{k}"] = statistics.median(r[0][k] for r in rounds)
                            row[f"veil_{k}"] = statistics.median(r[1][label][k] for r in rounds)
                            row[f"overhead_{k}"] = statistics.median(r[1][label][k] - r[0][k] for r in rounds)
                        row["veil_rps"] = statistics.median(r[1][label]["rps"] for r in rounds)
                        row["veil_ok_share"] = (sum(r[1][label]["ok"] for r in rounds)
                                                / max(1, sum(r[1][label]["requests"] for r in rounds)))
                        results.append(row)
                        name = setup if not a.compare else f"{setup}/{label}"
                        print(f"{name:14} {rate:5} rps  direct p50 {row['direct_p50_ms']:6.2f} p99 {row['direct_p99_ms']:6.2f}  "
                              f"veil p50 {row['veil_p50_ms']:6.2f} p99 {row['veil_p99_ms']:7.2f}  overhead p50 "
                              f"{row['overhead_p50_ms']:6.2f} p99 {row['overhead_p99_ms']:7.2f} ms  served {row['veil_rps']:7.1f} rps, "
                              f"{100 * row['veil_ok_share']:.1f}% 200", flush=True)
            for _, _, veil in served:
                veil.send_signal(signal.SIGTERM)
                veil.wait(timeout=60)
                procs.remove(veil)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
