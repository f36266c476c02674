package sftest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// query is the subset of SOQL the fake answers:
//
//	SELECT f1, f2 FROM Obj [WHERE Field = 'lit' | WHERE Field LIKE 'pat'] [LIMIT n]
type query struct {
	fields []string
	object string
	field  string // "" without WHERE
	op     string // "=" or "LIKE"
	value  string // for =, the plain literal; for LIKE, the pattern with \\, \% and \_ kept
	limit  int    // -1 without LIMIT
}

type token struct {
	kind string // "ident", "str", "num", ",", "="
	text string
}

func lex(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == ',' || c == '=':
			toks = append(toks, token{string(c), string(c)})
			i++
		case c == '\'':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\'' {
					closed = true
					i++
					break
				}
				if c == '\\' {
					if i+1 >= len(s) {
						return nil, fmt.Errorf("Invalid string literal: unterminated escape")
					}
					e := s[i+1]
					switch e {
					case 'n':
						b.WriteByte('\n')
					case 'r':
						b.WriteByte('\r')
					case 't':
						b.WriteByte('\t')
					case 'b':
						b.WriteByte('\b')
					case 'f':
						b.WriteByte('\f')
					case '"', '\'':
						b.WriteByte(e)
					case '\\', '%', '_':
						// Meaningful only in LIKE; kept escaped for the matcher.
						b.WriteByte('\\')
						b.WriteByte(e)
					default:
						return nil, fmt.Errorf("Invalid string literal '%s'. Illegal character sequence '\\%c' in string literal.", s, e)
					}
					i += 2
					continue
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unexpected token: unterminated string literal")
			}
			toks = append(toks, token{"str", b.String()})
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			toks = append(toks, token{"num", s[i:j]})
			i = j
		case c == '_' || c == '.' || (c|0x20 >= 'a' && c|0x20 <= 'z'):
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == '.' || (s[j]|0x20 >= 'a' && s[j]|0x20 <= 'z') || (s[j] >= '0' && s[j] <= '9')) {
				j++
			}
			toks = append(toks, token{"ident", s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected token: '%c'", c)
		}
	}
	return toks, nil
}

func parseSOQL(s string) (*query, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := 0
	peek := func() token {
		if p < len(toks) {
			return toks[p]
		}
		return token{"eof", "<EOF>"}
	}
	unexpected := func() error { return fmt.Errorf("unexpected token: '%s'", peek().text) }
	keyword := func(k string) bool {
		if t := peek(); t.kind == "ident" && strings.EqualFold(t.text, k) {
			p++
			return true
		}
		return false
	}
	q := &query{limit: -1}
	if !keyword("SELECT") {
		return nil, unexpected()
	}
	for {
		t := peek()
		if t.kind != "ident" || strings.EqualFold(t.text, "FROM") {
			return nil, unexpected()
		}
		q.fields = append(q.fields, t.text)
		p++
		if peek().kind != "," {
			break
		}
		p++
	}
	if !keyword("FROM") {
		return nil, unexpected()
	}
	if t := peek(); t.kind == "ident" {
		q.object = t.text
		p++
	} else {
		return nil, unexpected()
	}
	if keyword("WHERE") {
		t := peek()
		if t.kind != "ident" {
			return nil, unexpected()
		}
		q.field = t.text
		p++
		switch {
		case peek().kind == "=":
			q.op = "="
			p++
		case keyword("LIKE"):
			q.op = "LIKE"
		default:
			return nil, unexpected()
		}
		if t := peek(); t.kind == "str" {
			q.value = t.text
			p++
		} else {
			return nil, unexpected()
		}
		if q.op == "=" {
			q.value = unescapeLike(q.value)
		}
	}
	if keyword("LIMIT") {
		t := peek()
		if t.kind != "num" {
			return nil, unexpected()
		}
		n, err := strconv.Atoi(t.text)
		if err != nil || n > 50000 {
			return nil, fmt.Errorf("invalid LIMIT %s", t.text)
		}
		q.limit = n
		p++
	}
	if p != len(toks) {
		return nil, unexpected()
	}
	return q, nil
}

// unescapeLike turns the lexer's form, where a backslash, % or _ written
// with a backslash keeps it, into the plain string.
func unescapeLike(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// likeRE turns a SOQL LIKE pattern into a case-insensitive regexp.
func likeRE(pat string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("(?is)^")
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		switch {
		case c == '\\' && i+1 < len(pat):
			b.WriteString(regexp.QuoteMeta(string(pat[i+1])))
			i++
		case c == '%':
			b.WriteString(".*")
		case c == '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
