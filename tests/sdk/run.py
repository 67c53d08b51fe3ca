#!/usr/bin/env python3
"""End-to-end check with the official OpenAI Python SDK, unchanged, against the veil binary.

Starts a counting mock upstream (OpenAI-compatible: JSON, SSE streaming, tool calls), starts
`target/debug/veil serve` with a temporary config pointing at it, and drives veil with the SDK:
a clean prompt is answered, a streamed prompt arrives chunk by chunk, an email is redacted
upstream and restored in the answer, tool calls round-trip, a card number is blocked with the
rule named, and a prompt that must stay local is answered by the in-process model (JSON and
streaming) without any cloud hit. Then a canary sweep: after SIGTERM, none of the sensitive
values sent appears in veil's log output (at debug level), in any file it left (database, WAL,
keys, checkpoint file) or in an export of the audit log.

The SDK is installed into .cache/sdk-venv (pinned) on first run.
"""
import http.server, json, os, re, socket, subprocess, sys, tempfile, threading, time, venv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".cache", "sdk-venv")
SDK = "openai==2.8.1"
KEY = "sdk-test-key"


def ensure_sdk():
    py = os.path.join(VENV, "bin", "python")
    if os.environ.get("VEIL_SDK_CHILD"):
        return
    if not os.path.exists(py):
        venv.create(VENV, with_pip=True)
    ok = subprocess.run([py, "-c", f"import openai,sys; sys.exit(openai.__version__ != '{SDK.split('==')[1]}')"],
                        capture_output=True).returncode == 0
    if not ok:
        subprocess.run([py, "-m", "pip", "install", "-q", SDK], check=True)
    env = dict(os.environ, VEIL_SDK_CHILD="1")
    sys.exit(subprocess.run([py, __file__], env=env).returncode)


class Mock(http.server.BaseHTTPRequestHandler):
    hits = 0
    bodies = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        raw = self.rfile.read(n).decode()
        Mock.hits += 1
        Mock.bodies.append(raw)
        req = json.loads(raw)
        user = [m for m in req["messages"] if m["role"] == "user"][-1]["content"]
        reply = "You said: " + (user if isinstance(user, str) else " ".join(p.get("text", "") for p in user))
        base = {"id": "chatcmpl-mock", "created": 1, "model": req["model"]}
        if req.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            def send(obj):
                self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                self.wfile.flush()
            send({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            for i in range(0, len(reply), 4):
                send({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": reply[i:i + 4]}, "finish_reason": None}]})
            send({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (req.get("stream_options") or {}).get("include_usage"):
                send({**base, "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
            self.wfile.write(b"data: [DONE]\n\n")
            return
        if req.get("tools"):
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": json.dumps({"echo": reply})}}]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": reply}
            finish = "stop"
        body = json.dumps({**base, "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_veil(tmp, upstream):
    import hashlib
    cfg = os.path.join(tmp, "veil.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:0"
[audit]
url = "sqlite://{tmp}/audit.db"
[policies]
dir = "{ROOT}/policies"
[[upstream]]
name = "mock"
base_url = "{upstream}/v1"
models = ["gpt-*"]
[classifier]
dir = "{ROOT}/models/classifier"
ort_library = "{ROOT}/.cache/onnxruntime/libonnxruntime.so.1.31.1"
[local]
model = "{ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
threads = 1
parallel = 1
context_size = 1024
[[key]]
id = "sdk"
sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
tenant = "sdk"
policy = "default"
""")
    binary = os.path.join(ROOT, "target", "debug", "veil")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build", "--bin", "veil"], cwd=ROOT, check=True)
    proc = subprocess.Popen([binary, "serve", "--config", cfg], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, RUST_LOG="debug", NO_COLOR="1"))
    proc.log = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        proc.log.append(line)
        if not line:
            if proc.poll() is not None:
                raise SystemExit(f"veil exited with {proc.returncode}")
            continue
        m = re.search(r"veil listening addr=(\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
        if m:
            for stream in (proc.stderr, proc.stdout):
                threading.Thread(target=lambda s=stream: [proc.log.append(l) for l in s], daemon=True).start()
            return proc, "http://" + m.group(1)
    proc.kill()
    raise SystemExit("veil did not start")


def main():
    import openai
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_veil(tmp, upstream)
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
            checks = 0

            r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}])
            assert r.choices[0].message.content == "You said: Hello there", r
            assert r.usage.total_tokens == 12
            checks += 1

            chunks = list(client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                        messages=[{"role": "user", "content": "Stream this please"}]))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "You said: Stream this please", text
            assert len(chunks) > 3
            checks += 1

            r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Reply to ana.lopez@example.com today"}])
            assert r.choices[0].message.content == "You said: Reply to ana.lopez@example.com today", r
            assert "ana.lopez@example.com" not in Mock.bodies[-1], Mock.bodies[-1]
            checks += 1

            with client.chat.completions.with_streaming_response.create(
                    model="gpt-4o-mini", stream=True,
                    messages=[{"role": "user", "content": "Reply to ana.lopez@example.com today"}]) as resp:
                assert resp.headers["x-veil-action"] == "redact"
                text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
            assert text == "You said: Reply to ana.lopez@example.com today", text
            checks += 1

            r = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Echo ana.lopez@example.com"}],
                tools=[{"type": "function", "function": {"name": "echo", "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}}}}])
            args = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
            assert args == {"echo": "You said: Echo ana.lopez@example.com"}, args
            checks += 1

            hits = Mock.hits
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "card 4111 1111 1111 1111"}])
                raise AssertionError("card was not blocked")
            except openai.PermissionDeniedError as e:
                assert e.code == "policy_blocked" and "pci.card.block" in str(e), e
            # The local model loads in the background; wait for /readyz.
            import urllib.request
            for _ in range(120):
                try:
                    if urllib.request.urlopen(url + "/readyz").status == 200:
                        break
                except Exception:
                    pass
                time.sleep(0.5)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", max_tokens=12, temperature=0,
                messages=[{"role": "user", "content": "my SSN is 536-22-8726, what is it for?"}])
            assert raw.headers["x-veil-route"] == "local", raw.headers
            r = raw.parse()
            assert r.choices[0].message.content.strip(), r
            assert 0 < r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 5, r.usage
            chunks = list(client.chat.completions.create(
                model="gpt-4o-mini", max_tokens=8, temperature=0, stream=True,
                messages=[{"role": "user", "content": "my SSN is 536-22-8726, what is it for?"}]))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
            assert Mock.hits == hits, "blocked and local requests reached the cloud"
            checks += 1

            try:
                openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("bad key accepted")
            except openai.AuthenticationError:
                pass
            checks += 1
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert proc.returncode == 0, f"veil exited with {proc.returncode}"
        canary_sweep(tmp, proc.log)
        checks += 1
        print(f"openai sdk {openai.__version__}: {checks} checks passed")


# Every sensitive value the checks send, in the forms it was typed and normalized.
CANARIES = ["ana.lopez@example.com", "ana.lopez", "4111 1111 1111 1111", "4111111111111111",
            "536-22-8726", "536228726"]


def canary_sweep(tmp, log):
    export = os.path.join(tmp, "export")
    binary = os.path.join(ROOT, "target", "debug", "veil")
    subprocess.run([binary, "--config", os.path.join(tmp, "veil.toml"), "audit", "export", export],
                   check=True, capture_output=True)
    blobs = {"log": "".join(log).encode()}
    for dirpath, _, names in os.walk(tmp):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                blobs[os.path.relpath(path, tmp)] = f.read()
    assert any(n.endswith("audit-checkpoints.jsonl") for n in blobs), sorted(blobs)
    assert any(n.startswith("export") for n in blobs), sorted(blobs)
    assert len(blobs["log"]) > 1000, "the sweep reads the real log"
    for name, blob in blobs.items():
        for canary in CANARIES:
            assert canary.encode() not in blob, f"{canary!r} found in {name}"


if __name__ == "__main__":
    ensure_sdk()
    main()
