package deliver

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// idnaLookup is the UTS 46 mapping for look-ups (lower case, width and
// compatibility folding, then RFC 5891 A-labels): what a browser or another
// MTA does with the same name.
var idnaLookup = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.StrictDomainName(false))

// toASCII turns a domain with Unicode labels into its A-labels (RFC 5890),
// the only form the DNS knows. An all-ASCII domain only has its case folded.
func toASCII(domain string) (string, error) {
	if !utf8.ValidString(domain) {
		return "", errors.New("deliver: domain is not valid UTF-8")
	}
	a, err := idnaLookup.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("deliver: domain %q: %w", domain, err)
	}
	return a, nil
}
