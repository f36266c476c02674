package bounce

import (
	"errors"
	"strings"
	"testing"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestVERPRoundTrip(t *testing.T) {
	addr := EncodeVERP(testKey, "q7f3k9x2", "Example.COM")
	local, host, _ := strings.Cut(addr, "@")
	if host != "bounce.example.com" || !strings.HasPrefix(local, "b+q7f3k9x2.") || len(local) != len("b+q7f3k9x2.")+10 {
		t.Fatalf("EncodeVERP = %q, want b+q7f3k9x2.<10 chars>@bounce.example.com", addr)
	}
	mac := local[len("b+q7f3k9x2."):]
	if strings.ToLower(mac) != mac || strings.ContainsAny(mac, "=") {
		t.Errorf("MAC %q is not lower-case unpadded base32", mac)
	}
	for _, a := range []string{addr, strings.ToUpper(addr), "<" + addr + ">", " " + addr + " "} {
		id, dom, err := DecodeVERP(testKey, a)
		if err != nil || id != "q7f3k9x2" || dom != "example.com" {
			t.Errorf("DecodeVERP(%q) = %q, %q, %v; want q7f3k9x2, example.com, nil", a, id, dom, err)
		}
	}
	if EncodeVERP(testKey, "abc", "example.com") == EncodeVERP(testKey, "abd", "example.com") {
		t.Error("different queue ids give the same address")
	}
}

func TestVERPErrors(t *testing.T) {
	good := EncodeVERP(testKey, "abc123", "example.com")
	local, _, _ := strings.Cut(good, "@")
	mac := local[len("b+abc123."):]
	flip := "a"
	if mac[0] == 'a' {
		flip = "b"
	}
	tests := []struct {
		addr string
		want error
	}{
		{"user@example.com", ErrNotVERP},
		{"b+abc123." + mac + "@example.com", ErrNotVERP},         // not on bounce.
		{"x+abc123." + mac + "@bounce.example.com", ErrNotVERP},  // wrong prefix
		{"b+abc123@bounce.example.com", ErrNotVERP},              // no MAC
		{"b+abc-123." + mac + "@bounce.example.com", ErrNotVERP}, // bad queue id
		{"b+." + mac + "@bounce.example.com", ErrNotVERP},        // empty queue id
		{"b+" + strings.Repeat("a", 33) + "." + mac + "@bounce.example.com", ErrNotVERP},
		{"b+abc123." + mac[:9] + "@bounce.example.com", ErrNotVERP}, // short MAC
		{"b+abc123." + mac + "@bounce.", ErrNotVERP},
		{"b+abc123." + mac + "@bounce.example.com@x", ErrNotVERP},
		{"", ErrNotVERP},
		{"b+abc123." + flip + mac[1:] + "@bounce.example.com", ErrBadMAC},
		{"b+abc124." + mac + "@bounce.example.com", ErrBadMAC}, // other id
		{"b+abc123." + mac + "@bounce.example.org", ErrBadMAC}, // other domain
	}
	for _, tt := range tests {
		_, _, err := DecodeVERP(testKey, tt.addr)
		if !errors.Is(err, tt.want) {
			t.Errorf("DecodeVERP(%q) error = %v, want %v", tt.addr, err, tt.want)
		}
	}
	if _, _, err := DecodeVERP([]byte("another key"), good); !errors.Is(err, ErrBadMAC) {
		t.Errorf("DecodeVERP with another key: error = %v, want ErrBadMAC", err)
	}
}

func FuzzDecodeVERP(f *testing.F) {
	f.Add(EncodeVERP(testKey, "abc123", "example.com"))
	f.Add("b+x.aaaaaaaaaa@bounce.example.com")
	f.Add("user@example.com")
	f.Add("b+@bounce.")
	f.Add("<B+ABC.0123456789@BOUNCE.X>")
	f.Fuzz(func(t *testing.T, addr string) {
		id, dom, err := DecodeVERP(testKey, addr)
		if err != nil {
			if !errors.Is(err, ErrNotVERP) && !errors.Is(err, ErrBadMAC) {
				t.Fatalf("DecodeVERP(%q): error %v is neither ErrNotVERP nor ErrBadMAC", addr, err)
			}
			return
		}
		// Anything accepted must be what EncodeVERP makes for it.
		if got := EncodeVERP(testKey, id, dom); !strings.EqualFold(got, strings.Trim(strings.TrimSpace(addr), "<>")) {
			t.Fatalf("DecodeVERP(%q) = %q, %q but EncodeVERP gives %q", addr, id, dom, got)
		}
	})
}
