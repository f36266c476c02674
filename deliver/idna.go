package deliver

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// toASCII turns a domain with Unicode labels into its A-labels (RFC 5890,
// punycode of RFC 3492), the only form the DNS knows. It lower-cases but
// does not apply the full UTS 46 mapping: golang.org/x/net/idna would need
// golang.org/x/text, which is not among the module's dependencies.
func toASCII(domain string) (string, error) {
	if !utf8.ValidString(domain) {
		return "", errors.New("deliver: domain is not valid UTF-8")
	}
	labels := strings.Split(strings.ToLower(domain), ".")
	for i, l := range labels {
		if isASCII(l) {
			continue
		}
		enc, err := punycode(l)
		if err != nil {
			return "", err
		}
		if len(enc)+4 > 63 {
			return "", errors.New("deliver: domain label too long")
		}
		labels[i] = "xn--" + enc
	}
	return strings.Join(labels, "."), nil
}

// punycode encodes s as RFC 3492 section 6.3 says.
func punycode(s string) (string, error) {
	const (
		base, tmin, tmax, skew, damp = 36, 1, 26, 38, 700
		initialBias, initialN        = 72, 128
	)
	adapt := func(delta, numPoints int, first bool) int {
		if first {
			delta /= damp
		} else {
			delta /= 2
		}
		delta += delta / numPoints
		k := 0
		for delta > ((base-tmin)*tmax)/2 {
			delta /= base - tmin
			k += base
		}
		return k + (base-tmin+1)*delta/(delta+skew)
	}
	digit := func(d int) byte {
		if d < 26 {
			return byte('a' + d)
		}
		return byte('0' + d - 26)
	}
	runes := []rune(s)
	var out []byte
	for _, r := range runes {
		if r < 0x80 {
			out = append(out, byte(r))
		}
	}
	b := len(out)
	h := b
	if b > 0 {
		out = append(out, '-')
	}
	n, delta, bias := initialN, 0, initialBias
	for h < len(runes) {
		m := int(utf8.MaxRune) + 1
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		if (m-n) > (1<<30)/(h+1) || len(out) > 255 {
			return "", errors.New("deliver: domain label too long")
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
			}
			if int(r) != n {
				continue
			}
			q := delta
			for k := base; ; k += base {
				t := min(max(k-bias, tmin), tmax)
				if q < t {
					break
				}
				out = append(out, digit(t+(q-t)%(base-t)))
				q = (q - t) / (base - t)
			}
			out = append(out, digit(q))
			bias = adapt(delta, h+1, h == b)
			delta = 0
			h++
		}
		delta++
		n++
	}
	return string(out), nil
}
