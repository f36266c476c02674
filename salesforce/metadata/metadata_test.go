package metadata

import (
	"encoding/json"
	"encoding/xml"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

// Every file is well-formed XML of the type its suffix names, and everything
// that names a field names one that exists: a report column, list view
// column or permission for a field that is not there fails the deploy.
func TestSourceIsConsistent(t *testing.T) {
	fields, err := Fields(Object)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]Field{}
	for _, f := range fields {
		have[f.Name] = f
		if f.Label == "" || f.Type == "" {
			t.Errorf("%s: no label or type", f.Name)
		}
		switch f.Type {
		case "Text":
			if f.Length < 1 || f.Length > 255 {
				t.Errorf("%s: Text length %d", f.Name, f.Length)
			}
		case "Picklist":
			if len(f.Picklist) == 0 {
				t.Errorf("%s: picklist without values", f.Name)
			}
		case "Lookup":
			if f.ReferenceTo == "" {
				t.Errorf("%s: lookup to nothing", f.Name)
			}
		case "Email", "DateTime", "Checkbox", "Number":
		default:
			t.Errorf("%s: type %q not used here", f.Name, f.Type)
		}
	}
	if id := have["Latchkey_Id__c"]; !id.ExternalID || !id.Unique {
		t.Errorf("Latchkey_Id__c must be a unique External ID (latchkey upserts by it): %+v", id)
	}

	var proj struct {
		PackageDirectories []struct{ Path string } `json:"packageDirectories"`
		SourceAPIVersion   string                  `json:"sourceApiVersion"`
	}
	b, _ := Source.ReadFile("sfdx-project.json")
	if err := json.Unmarshal(b, &proj); err != nil || len(proj.PackageDirectories) != 1 || proj.PackageDirectories[0].Path != "force-app" {
		t.Errorf("sfdx-project.json: %v %+v", err, proj)
	}

	refs := map[string][]string{} // file -> fields it names
	files := 0
	fs.WalkDir(Source, "force-app", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, _ := Source.ReadFile(p)
		var root struct {
			XMLName xml.Name
			Columns []struct {
				Text  string `xml:",chardata"`
				Field string `xml:"field"`
			} `xml:"columns"`
			Perms   []string `xml:"fieldPermissions>field"`
			RTCols  []string `xml:"sections>columns>field"`
			Filters []string `xml:"filters>field"`
			Date    string   `xml:"timeFrameFilter>dateColumn"`
		}
		if err := xml.Unmarshal(b, &root); err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		var cols []string
		for _, c := range root.Columns {
			if c.Field != "" {
				cols = append(cols, c.Field)
			} else {
				cols = append(cols, strings.TrimSpace(c.Text))
			}
		}
		kind := strings.TrimSuffix(suffix(p), "-meta.xml")
		want := map[string]string{".object": "CustomObject", ".field": "CustomField", ".listView": "ListView",
			".reportType": "ReportType", ".report": "Report", ".reportFolder": "ReportFolder", ".permissionset": "PermissionSet"}[kind]
		if want == "" || root.XMLName.Local != want || root.XMLName.Space != "http://soap.sforce.com/2006/04/metadata" {
			t.Errorf("%s: root <%s xmlns=%q>, want <%s> in the metadata namespace", p, root.XMLName.Local, root.XMLName.Space, want)
		}
		switch kind {
		case ".listView":
			refs[p] = append(cols, root.Filters...)
		case ".report":
			refs[p] = append(cols, root.Date)
		case ".reportType":
			refs[p] = root.RTCols
		case ".permissionset":
			refs[p] = root.Perms
			for name, f := range have {
				if !f.Required && !slices.Contains(root.Perms, Object+"."+name) {
					t.Errorf("%s: no permission for %s", p, name)
				}
			}
		}
		return nil
	})
	if files < 10 {
		t.Fatalf("only %d metadata files embedded", files)
	}
	for file, names := range refs {
		for _, n := range names {
			n = strings.TrimPrefix(n, Object+".")
			if n == "NAME" {
				continue
			}
			if _, ok := have[n]; !ok {
				t.Errorf("%s names field %q, which the object does not have", file, n)
			}
		}
	}
}

// suffix returns the part that names a metadata file's type.
func suffix(p string) string {
	base := p[strings.LastIndex(p, "/")+1:]
	return base[strings.Index(base, "."):]
}
