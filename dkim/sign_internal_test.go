package dkim

import (
	"strings"
	"testing"
)

func TestHeaderKeys(t *testing.T) {
	msg := "from: a@example.test\r\n" +
		"To: b@x.test,\r\n c@x.test\r\n" + // folded: one field
		"Received: from x\r\n" +
		"Subject : spaced name\r\n" +
		"Subject: twice\r\n" +
		"X-Subject: not it\r\n" +
		"List-Unsubscribe: <https://example.test/u>\r\n" +
		"\r\n" +
		"From: in the body, not a header\r\n"
	got := strings.Join(headerKeys([]byte(msg)), ":")
	want := "From:From:To:To:Cc:Subject:Subject:Subject:Date:Message-ID:Reply-To:In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding:List-Id:List-Unsubscribe:List-Unsubscribe:List-Unsubscribe-Post"
	if got != want {
		t.Errorf("h=\n got %s\nwant %s", got, want)
	}

	// Absurd repetition is capped so h= stays bounded.
	many := strings.Repeat("To: x@x.test\r\n", 500) + "From: a@a.test\r\n\r\n"
	n := 0
	for _, k := range headerKeys([]byte(many)) {
		if k == "To" {
			n++
		}
	}
	if n != maxCount+1 {
		t.Errorf("To listed %d times, want %d", n, maxCount+1)
	}
	// A header without body separator still yields a list (signing then fails
	// in go-msgauth, which is tested elsewhere).
	if len(headerKeys(nil)) != len(signedHeaders) {
		t.Error("empty message")
	}
}
