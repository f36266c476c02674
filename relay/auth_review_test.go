package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/conf"
)

// A user defined twice (twice in users_file, or there and in
// [[submission.users]]) is an error naming the file and line, not a second
// password that silently replaces the first.
func TestUsersFileDuplicate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "users")
	for _, tc := range []struct {
		name, text string
		inline     bool
		wantLine   string
	}{
		{"twice in the file", "sf:" + userHash + "\n# comment\nsf:" + userHash + "\n", false, ":3:"},
		{"file and config", "sf:" + userHash + "\n", true, ":1:"},
	} {
		if err := os.WriteFile(file, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		c := &conf.Config{DataDir: dir}
		c.Submission.UsersFile = file
		if tc.inline {
			c.Submission.Users = []conf.User{{Name: "sf", PasswordHash: userHash}}
		}
		_, err := loadUsers(c)
		if err == nil || !strings.Contains(err.Error(), file+tc.wantLine) || !strings.Contains(err.Error(), `"sf"`) {
			t.Errorf("%s: %v, want an error at %s%s naming the user", tc.name, err, file, tc.wantLine)
		}
	}
	// One definition is fine.
	if err := os.WriteFile(file, []byte("sf:"+userHash+"\nother:"+userHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &conf.Config{DataDir: dir}
	c.Submission.UsersFile = file
	if u, err := loadUsers(c); err != nil || !u.check("sf", testPass) {
		t.Errorf("a good users file: %v", err)
	}
}
