package relay

import (
	"bytes"
	"testing"
)

// The 15-character form of a Salesforce id is case-sensitive: 00D…ABCD and
// 00D…abcd are two orgs. The org check compared ids ignoring case, so a
// message from the other org passed it. The 15- and 18-character forms of
// the allowed org still match.
func TestSubmitOrgIDCase(t *testing.T) {
	e := newEnv(t, envOpts{policy: fastPolicy, preStart: func(s *Server) {
		s.cfg.Submission.OrgIDs = []string{"00D5g000004ABCD"}
	}})
	c := e.client("PLAIN")
	for _, tc := range []struct {
		org  string
		want int
	}{
		{"00D5g000004ABCDEAA", 250}, // 18-char form of the allowed org
		{"00D5g000004ABCD", 250},
		{"00D5g000004abcd", 550},    // another org
		{"00D5g000004abcdEAA", 550}, // its 18-char form
	} {
		msg := bytes.Replace(resetMsg("jane@dest.test", "org"+tc.org), []byte("X-SFDC-LK: 00D5g000004ABCDEAA"), []byte("X-SFDC-LK: "+tc.org), 1)
		_, err := send(c, "noreply@example.com", []string{"jane@dest.test"}, msg)
		code := 250
		if err != nil {
			code, _ = smtpCode(err)
		}
		if code != tc.want {
			t.Errorf("X-SFDC-LK %s: answered %d (%v), want %d", tc.org, code, err, tc.want)
		}
	}
}
