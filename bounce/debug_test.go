package bounce

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDebugFile prints what Parse makes of the corpus files named in
// BOUNCE_DEBUG (a glob); it does nothing otherwise.
func TestDebugFile(t *testing.T) {
	g := os.Getenv("BOUNCE_DEBUG")
	if g == "" {
		t.Skip("set BOUNCE_DEBUG to a corpus file glob")
	}
	files, _ := filepath.Glob(filepath.Join(corpusDir, g))
	for _, f := range files {
		rep := parseFile(t, f)
		t.Logf("%s: bounce=%v complaint=%v format=%s", filepath.Base(f), rep.IsBounce, rep.IsComplaint, rep.Format)
		for _, r := range rep.Recipients {
			t.Logf("  %+v", r)
		}
	}
}
