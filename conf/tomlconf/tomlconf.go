// Package tomlconf decodes TOML configuration strictly and reports every
// problem with the file, line and key it belongs to.
//
// BurntSushi/toml reports syntax errors with a position but says nothing of
// where a key stands, and it silently ignores unknown keys. An ops engineer
// editing policy.toml at 3 a.m. needs "policy.toml:42: classes.reset.expiry:
// …", so this package finds the line of every key itself and turns unknown
// keys into errors.
package tomlconf

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int    // 1-based; 0 when unknown
	Key  string // dotted key path; "" for syntax errors
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one load, in line order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// decodeErrRE matches BurntSushi's type-mismatch errors, which are not
// ParseErrors but carry the line and key in their text.
var decodeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// Decode decodes src into v. Syntax errors, type mismatches and unknown keys
// are returned as Errors. v's fields must carry toml tags.
func Decode(file string, src []byte, v any) (toml.MetaData, error) {
	md, err := toml.Decode(string(src), v)
	if err != nil {
		e := &Error{File: file, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line = pe.Position.Line
			e.Msg = pe.Message
			if pe.LastKey != "" {
				e.Key = pe.LastKey
			}
		} else if m := decodeErrRE.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Key, e.Msg = m[2], m[3]
		}
		return md, Errors{e}
	}
	var errs Errors
	idx := Index(src)
	for _, k := range md.Undecoded() {
		key := k.String()
		lines := idx.Lines(key)
		if len(lines) == 0 {
			lines = []int{0}
		}
		for _, l := range lines {
			errs = append(errs, &Error{File: file, Line: l, Key: key, Msg: "unknown key"})
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return md, errs
	}
	return md, nil
}

// FromValidation turns the error returned by a Validate method into Errors.
// Validate methods join messages of the form "key: problem", with key relative
// to prefix (the table the validated struct was decoded from). A numeric path
// element names the n-th (0-based) element of an array of tables.
func FromValidation(file string, src []byte, prefix string, err error) Errors {
	if err == nil {
		return nil
	}
	idx := Index(src)
	var msgs []string
	var flatten func(error)
	flatten = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				flatten(e)
			}
			return
		}
		msgs = append(msgs, strings.Split(err.Error(), "\n")...)
	}
	flatten(err)
	var errs Errors
	for _, m := range msgs {
		key, msg, ok := strings.Cut(m, ": ")
		if !ok || strings.ContainsAny(key, " \t") {
			key, msg = "", m
		}
		full := key
		if prefix != "" {
			if key == "" {
				full = prefix
			} else {
				full = prefix + "." + key
			}
		}
		e := &Error{File: file, Key: full, Msg: msg}
		if l := idx.Lines(full); len(l) > 0 {
			e.Line = l[0]
		} else if l := idx.Lines(parentKey(full)); len(l) > 0 {
			e.Line = l[0]
		}
		errs = append(errs, e)
	}
	sortErrors(errs)
	return errs
}

func parentKey(k string) string {
	if i := strings.LastIndexByte(k, '.'); i > 0 {
		return k[:i]
	}
	return ""
}

func sortErrors(errs Errors) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
}

// KeyIndex maps dotted key paths to the lines that define them.
type KeyIndex map[string][]int

// Lines returns the lines where key is defined. key may use either the plain
// path ("rules.header") or one with array indexes ("rules.2.header").
func (x KeyIndex) Lines(key string) []int { return x[key] }

// Index scans TOML text and records, for every key and table, the line it is
// set on. Keys inside arrays of tables are recorded both with the element's
// index ("rules.0.match") and without ("rules.match"). It is a line scanner,
// not a parser: it is only used to point at lines, after toml.Decode accepted
// the text.
func Index(src []byte) KeyIndex {
	x := KeyIndex{}
	add := func(k string, line int) { x[k] = append(x[k], line) }
	var table, tableIdx string     // current table path, without and with indexes
	arrayCount := map[string]int{} // plain array path → elements of the current parent
	elemCount := map[string]int{}  // indexed array path → elements seen
	inMultiline := ""
	for i, raw := range strings.Split(string(src), "\n") {
		line := i + 1
		s := strings.TrimSpace(raw)
		if inMultiline != "" {
			if strings.Contains(s, inMultiline) {
				inMultiline = ""
			}
			continue
		}
		if s == "" || s[0] == '#' {
			continue
		}
		if strings.HasPrefix(s, "[[") {
			name := normKey(strings.TrimSuffix(strings.TrimSpace(strings.SplitN(s[2:], "]]", 2)[0]), "]]"))
			// Elements are numbered within their parent element:
			// the first [[domains.dkim]] of each [[domains]] is 0.
			base := indexed(name, arrayCount)
			n := elemCount[base]
			elemCount[base] = n + 1
			arrayCount[name] = n + 1
			table = name
			tableIdx = base + "." + strconv.Itoa(n)
			add(table, line)
			add(tableIdx, line)
			continue
		}
		if s[0] == '[' {
			name := normKey(strings.SplitN(s[1:], "]", 2)[0])
			table, tableIdx = name, indexed(name, arrayCount)
			add(table, line)
			if tableIdx != table {
				add(tableIdx, line)
			}
			continue
		}
		eq := keyEnd(s)
		if eq < 0 {
			continue
		}
		k := normKey(s[:eq])
		add(join(table, k), line)
		if tableIdx != table {
			add(join(tableIdx, k), line)
		}
		rest := strings.TrimSpace(s[eq+1:])
		for _, q := range []string{`"""`, `'''`} {
			if strings.HasPrefix(rest, q) && !strings.Contains(rest[3:], q) {
				inMultiline = q
			}
		}
	}
	return x
}

// indexed rewrites a sub-table path under an array of tables to name the
// current element: [rules.match] after the third [[rules]] is rules.2.match.
func indexed(name string, counts map[string]int) string {
	parts := strings.Split(name, ".")
	var out []string
	for i := range parts {
		out = append(out, parts[i])
		if n, ok := counts[strings.Join(parts[:i+1], ".")]; ok && i < len(parts)-1 {
			out = append(out, strconv.Itoa(n-1))
		}
	}
	return strings.Join(out, ".")
}

// keyEnd returns the index of the '=' that ends the key, skipping quoted keys.
func keyEnd(s string) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		case c == '#':
			return -1
		}
	}
	return -1
}

// normKey turns `a . "b.c" .d` into a.b.c.d — the form toml.Key.String uses
// (which also does not quote).
func normKey(k string) string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, strings.TrimSpace(cur.String()))
	return strings.Join(parts, ".")
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}
