package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A rate limit with a zero window was accepted, and the queue treats a zero
// window as no limit: rate_limit = 5 with rate_window = "0s" silently turned
// reset-bomb protection off.
func TestRateWindowZeroWithLimitRefused(t *testing.T) {
	src := strings.Replace(testPolicy, `rate_window = "15m"`, `rate_window = "0s"`, 1)
	f := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(f)
	line := 1 + strings.Count(src[:strings.Index(src, `rate_window = "0s"`)], "\n")
	want := f + ":" + itoa(line) + ": classes.0.rate_window: "
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one starting %q", err, want)
	}
	// Off (rate_limit = 0) with a zero window stays fine.
	src = strings.Replace(src, "rate_limit = 5", "rate_limit = 0", 1)
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f); err != nil {
		t.Fatalf("rate_limit = 0, rate_window = \"0s\": %v", err)
	}
}

func itoa(n int) string {
	var b []byte
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
