package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const reviewBase = `hostname = "relay.example.com"
[submission]
listen = ["127.0.0.1:2525"]
%s
[[domains]]
name = "example.com"
[[domains.dkim]]
selector = "s1"
algo = "rsa"
key_file = "k.pem"
%s`

func loadFile(t *testing.T, src string) (*Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "latchkey.toml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(f)
}

// A duration written as a bare number was read as nanoseconds:
// command_timeout = 300 made every SMTP command time out at once.
func TestBareNumberDurationRefused(t *testing.T) {
	cases := []struct{ sub, tail, want string }{
		{"command_timeout = 300", "", ":4: submission.command_timeout: "},
		{"data_timeout = 600", "", ":4: submission.data_timeout: "},
		{"", "[delivery]\nconnect_timeout = 30\n", ":12: delivery.connect_timeout: "},
		{"", "[audit]\nretention = 34560000000000000\n", ":12: audit.retention: "},
	}
	for _, tc := range cases {
		src := strings.Replace(strings.Replace(reviewBase, "%s", tc.sub, 1), "%s", tc.tail, 1)
		c, err := loadFile(t, src)
		if err == nil {
			t.Errorf("%q%q accepted (%v, %v)", tc.sub, tc.tail, c.Submission.CommandTimeout, c.Delivery.ConnectTimeout)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "unit") {
			t.Errorf("%q%q: error\n%v\nlacks %q and a word on the unit", tc.sub, tc.tail, err, tc.want)
		}
	}
	// Durations with a unit still load.
	src := strings.Replace(strings.Replace(reviewBase, "%s", `command_timeout = "300s"`, 1), "%s", "", 1)
	if c, err := loadFile(t, src); err != nil || c.Submission.CommandTimeout.Seconds() != 300 {
		t.Errorf("command_timeout = \"300s\": %v", err)
	}
}

// auth_failure_window = "0s" (or negative) silently turned the failed-AUTH
// limiter off: every failure aged out before the next one was counted.
func TestAuthFailureWindowMustBePositive(t *testing.T) {
	for _, v := range []string{`"0s"`, `"-15m"`} {
		src := strings.Replace(strings.Replace(reviewBase, "%s", "auth_failure_window = "+v, 1), "%s", "", 1)
		_, err := loadFile(t, src)
		if err == nil || !strings.Contains(err.Error(), ":4: submission.auth_failure_window: ") {
			t.Errorf("auth_failure_window = %s: error %v", v, err)
		}
	}
}

// Two [[submission.users]] with one name: the second hash silently
// replaced the first.
func TestDuplicateSubmissionUser(t *testing.T) {
	users := "[[submission.users]]\nname = \"sf\"\npassword_hash = \"$2a$10$a\"\n[[submission.users]]\nname = \"sf\"\npassword_hash = \"$2a$10$b\"\n"
	src := strings.Replace(strings.Replace(reviewBase, "%s", "", 1), "%s", users, 1)
	_, err := loadFile(t, src)
	if err == nil || !strings.Contains(err.Error(), `submission.users.1.name: user "sf" is listed twice`) {
		t.Errorf("error %v", err)
	}
}
