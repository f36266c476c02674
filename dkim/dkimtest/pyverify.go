// Package dkimtest checks DKIM signatures with an implementation independent
// of the one latchkey signs with: Debian's python3-dkim (dkimpy), run as
// /usr/bin/python3. A signature that both go-msgauth and dkimpy accept is
// far less likely to be a shared misreading of RFC 6376.
package dkimtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Python is the interpreter used; the Debian one, because python3 on PATH
// may be a pyenv shim without the distribution's modules.
const Python = "/usr/bin/python3"

// PyResult is dkimpy's verdict on one DKIM-Signature, in header order (the
// topmost signature first).
type PyResult struct {
	Domain    string // d=
	Selector  string // s=
	Algorithm string // a=
	OK        bool
	// Error is dkimpy's exception or logged error, empty when OK.
	Error string
}

// exitUnavailable is the script's exit status when dkim or nacl is missing.
const exitUnavailable = 3

const script = `
import sys, json, base64, logging
try:
    import dkim
    import dkim.util
    import nacl.signing
except ImportError as e:
    sys.stderr.write("import failed: %s\n" % e)
    sys.exit(3)

data = json.load(sys.stdin)
msg = base64.b64decode(data["msg"])
records = {}
for name, value in (data.get("records") or {}).items():
    records[name.lower().rstrip(".")] = value

def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    v = records.get(name.lower().rstrip("."))
    if v is None:
        return None
    return v.encode()

class Collect(logging.Handler):
    def __init__(self):
        logging.Handler.__init__(self, logging.WARNING)
        self.msgs = []
    def emit(self, record):
        self.msgs.append(record.getMessage())

def s(v):
    if v is None:
        return ""
    return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)

sigs = [v for k, v in dkim.DKIM(msg).headers if k.lower() == b"dkim-signature"]
out = []
for i, raw in enumerate(sigs):
    res = {"domain": "", "selector": "", "algorithm": "", "ok": False, "error": ""}
    try:
        tags = dkim.util.parse_tag_value(raw)
        res["domain"] = s(tags.get(b"d"))
        res["selector"] = s(tags.get(b"s"))
        res["algorithm"] = s(tags.get(b"a"))
    except Exception as e:
        res["error"] = "parse: %s" % e
    log = logging.getLogger("dkimtest.%d" % i)
    log.propagate = False
    h = Collect()
    log.addHandler(h)
    try:
        res["ok"] = bool(dkim.DKIM(msg, logger=log).verify(idx=i, dnsfunc=dnsfunc))
        if not res["ok"] and not res["error"]:
            res["error"] = "; ".join(h.msgs) or "signature did not verify"
    except Exception as e:
        res["ok"] = False
        res["error"] = "%s: %s" % (type(e).__name__, e)
    out.append(res)
json.dump(out, sys.stdout)
`

// PyVerify verifies every DKIM-Signature in msg with dkimpy, answering its key
// lookups from records (owner name such as "sel._domainkey.example.com.",
// with or without the trailing dot, → TXT value). It skips the test when
// python3 or its dkim/nacl modules are missing, and fails instead when the
// environment has CI=true. The message and records go through stdin.
func PyVerify(t testing.TB, msg []byte, records map[string]string) []PyResult {
	t.Helper()
	if _, err := os.Stat(Python); err != nil {
		unavailable(t, Python+" not found: "+err.Error())
		return nil
	}
	in, err := json.Marshal(struct {
		Msg     []byte            `json:"msg"` // base64, so any bytes survive
		Records map[string]string `json:"records"`
	}{msg, records})
	if err != nil {
		t.Fatalf("dkimtest: encode input: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// -I: ignore PYTHON* variables and the user site, so the result does not
	// depend on whoever runs the tests.
	cmd := exec.CommandContext(ctx, Python, "-I", "-c", script)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() == exitUnavailable {
		unavailable(t, "python3-dkim or python3-nacl missing ("+strings.TrimSpace(stderr.String())+"); apt-get install python3-dkim python3-nacl")
		return nil
	}
	if err != nil {
		t.Fatalf("dkimtest: %s failed: %v\nstderr:\n%s", Python, err, stderr.String())
	}
	var raw []struct {
		Domain    string `json:"domain"`
		Selector  string `json:"selector"`
		Algorithm string `json:"algorithm"`
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		t.Fatalf("dkimtest: decode python output: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := make([]PyResult, len(raw))
	for i, r := range raw {
		out[i] = PyResult{Domain: r.Domain, Selector: r.Selector, Algorithm: r.Algorithm, OK: r.OK, Error: r.Error}
	}
	return out
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("dkimtest: independent DKIM verifier unavailable under CI: %s", why)
	}
	t.Skipf("dkimtest: skipping, independent DKIM verifier unavailable: %s", why)
}
