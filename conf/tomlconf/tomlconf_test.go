package tomlconf

import (
	"errors"
	"strings"
	"testing"
)

type cfg struct {
	Name  string `toml:"name"`
	Port  int    `toml:"port"`
	Inner struct {
		Size int `toml:"size"`
	} `toml:"inner"`
	Rules []struct {
		Match string `toml:"match"`
	} `toml:"rules"`
}

func TestDecodeUnknownKeys(t *testing.T) {
	src := `name = "x"
port = 25
bogus = 1

[inner]
size = 3
sise = 4

[[rules]]
match = "a"

[[rules]]
match = "b"
mtach = "c"
`
	var c cfg
	_, err := Decode("t.toml", []byte(src), &c)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		"t.toml:3: bogus: unknown key",
		"t.toml:7: inner.sise: unknown key",
		"t.toml:14: rules.mtach: unknown key",
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors:\n%v", len(es), err)
	}
	for i, w := range want {
		if es[i].Error() != w {
			t.Errorf("error %d = %q, want %q", i, es[i].Error(), w)
		}
	}
}

func TestDecodeTypeAndSyntax(t *testing.T) {
	var c cfg
	_, err := Decode("t.toml", []byte("name = \"x\"\nport = \"twenty-five\"\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "t.toml:2") {
		t.Errorf("type error = %v, want line 2", err)
	}
	_, err = Decode("t.toml", []byte("name = \"x\"\n\nport = = 3\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "t.toml:3") {
		t.Errorf("syntax error = %v, want line 3", err)
	}
}

func TestFromValidation(t *testing.T) {
	src := "[inner]\nsize = -1\n\n[[rules]]\nmatch = \"ok\"\n[[rules]]\nmatch = \"(\"\n"
	err := errors.Join(errors.New("size: must be positive"), errors.New("rules.1.match: bad regexp"), errors.New("plain problem"))
	es := FromValidation("p.toml", []byte(src), "inner", err)
	got := es.Error()
	for _, w := range []string{"p.toml:2: inner.size: must be positive", "p.toml:1: inner: plain problem"} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in\n%s", w, got)
		}
	}
	nested := "[[d]]\nn = 1\n[[d.k]]\na = 1\n[[d]]\nn = 2\n[[d.k]]\na = 2\n[[d.k]]\na = 3\n"
	if l := Index([]byte(nested)).Lines("d.1.k.1.a"); len(l) != 1 || l[0] != 10 {
		t.Errorf("d.1.k.1.a at %v, want [10]", l)
	}
	es = FromValidation("p.toml", []byte(src), "", errors.New("rules.1.match: bad regexp"))
	if es[0].Line != 7 {
		t.Errorf("rules.1.match line = %d, want 7 (%v)", es[0].Line, es)
	}
}

func FuzzIndex(f *testing.F) {
	f.Add("a = 1\n[b]\nc = 'x'\n[[d]]\ne = \"\"\"\nq\n\"\"\"\n")
	f.Add("[a.\"b.c\"]\n'd' = 2 # c\n")
	f.Fuzz(func(t *testing.T, s string) {
		Index([]byte(s))
		var c cfg
		Decode("f.toml", []byte(s), &c)
	})
}
