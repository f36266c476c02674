package dnscheck

import (
	"testing"
)

func FuzzParseSPF(f *testing.F) {
	for _, s := range []string{
		"v=spf1 ip4:127.0.0.1 ip6:::1 -all",
		"v=spf1 a mx/24 a:x.example.com/24//64 ptr exists:%{i}.e.example.com include:i.example.com redirect=r.example.com",
		"v=spf1 ip6:2001:db8::/32 exp=x.example.com ~all",
		"v=spf1 +all", "v=spf1", "v=spf1  ", "v=spf1 -", "v=spf1 exists:%{", "v=spf1 a//", "v=spf1 x=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		terms, err := parseSPF(s)
		if err != nil {
			return
		}
		// What spfWith writes back (the fixes shown to the admin) must parse
		// to the same terms.
		again, err := parseSPF(spfWith(terms, nil, 0))
		if err != nil {
			t.Fatalf("rewritten %q: %v", spfWith(terms, nil, 0), err)
		}
		if len(again) != len(terms) {
			t.Fatalf("rewritten record has %d terms, want %d", len(again), len(terms))
		}
		if _, err := parseSPF(spfWith(terms, []string{"ip4:192.0.2.1"}, '-')); err != nil {
			t.Fatalf("fixed record: %v", err)
		}
	})
}

func FuzzParseDMARC(f *testing.F) {
	for _, s := range []string{
		"v=DMARC1; p=reject",
		"v=DMARC1;p=none;sp=quarantine;pct=0;adkim=s;aspf=r;rua=mailto:a@b.c,mailto:d@e.f",
		"v=DMARC1; p=none; pct=007", "v=DMARC1; p", "v=DMARC1;;p=reject;", "v = DMARC1 ; p = reject",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseDMARC(s)
		if err != nil {
			return
		}
		if r.pct < 0 || r.pct > 100 || (r.aspf != 'r' && r.aspf != 's') || (r.adkim != 'r' && r.adkim != 's') {
			t.Fatalf("accepted out-of-range values: %+v", r)
		}
		// The fix for aspf must produce a record that parses with aspf=r.
		fixed, err := parseDMARC(withTag(s, "aspf", "r"))
		if err != nil {
			t.Fatalf("fixed %q: %v", withTag(s, "aspf", "r"), err)
		}
		if fixed.aspf != 'r' || fixed.p != r.p {
			t.Fatalf("fixed %q: %+v", withTag(s, "aspf", "r"), fixed)
		}
	})
}

func FuzzParseDKIMRecord(f *testing.F) {
	keys(f)
	rsaRec, _ := publicRecord(&rsaKey.PublicKey)
	edRec, _ := publicRecord(edPub)
	for _, s := range []string{
		rsaRec, edRec, "v=DKIM1; p=", "v=DKIM1; k=ed25519; t=y:s; h=sha256; s=email; p=AAAA",
		"k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ", "v=DKIM1; p= QUJD REVG",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseDKIMRecord(s)
		if err != nil {
			return
		}
		if !k.revoked && fingerprint(k.key) == "(no key)" {
			t.Fatalf("accepted %q without a usable key", s)
		}
	})
}
