// Package metadata holds the Salesforce side of latchkey as SFDX source (the
// Latchkey_Reset__c object, its fields, list views, report type, report and
// permission sets, under force-app/) and reads it back, so that the code
// that writes the records, the fake Salesforce the tests run against and
// what an admin deploys with `sf project deploy start` are one definition.
package metadata

import (
	"embed"
	"encoding/xml"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed sfdx-project.json force-app
var Source embed.FS

// Object is the API name of the per-reset object.
const Object = "Latchkey_Reset__c"

// Field is one custom field as its .field-meta.xml declares it.
type Field struct {
	Name        string   // API name, e.g. Status__c
	Label       string   //
	Type        string   // Text, Email, DateTime, Picklist, Lookup, Checkbox, Number
	Length      int      // Text
	Precision   int      // Number
	Scale       int      // Number
	Picklist    []string // restricted values
	ReferenceTo string   // Lookup
	ExternalID  bool
	Unique      bool
	Required    bool
}

type fieldXML struct {
	XMLName     xml.Name `xml:"CustomField"`
	FullName    string   `xml:"fullName"`
	Label       string   `xml:"label"`
	Type        string   `xml:"type"`
	Length      string   `xml:"length"`
	Precision   string   `xml:"precision"`
	Scale       string   `xml:"scale"`
	ReferenceTo string   `xml:"referenceTo"`
	ExternalID  bool     `xml:"externalId"`
	Unique      bool     `xml:"unique"`
	Required    bool     `xml:"required"`
	Values      []string `xml:"valueSet>valueSetDefinition>value>fullName"`
}

// Fields returns the custom fields of obj, by name.
func Fields(obj string) ([]Field, error) {
	dir := path.Join("force-app/main/default/objects", obj, "fields")
	ents, err := fs.ReadDir(Source, dir)
	if err != nil {
		return nil, fmt.Errorf("metadata: %s: %w", obj, err)
	}
	var out []Field
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".field-meta.xml")
		if !ok {
			continue
		}
		b, err := Source.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var x fieldXML
		if err := xml.Unmarshal(b, &x); err != nil {
			return nil, fmt.Errorf("metadata: %s/%s: %w", dir, e.Name(), err)
		}
		if x.FullName != name {
			return nil, fmt.Errorf("metadata: %s/%s: fullName %q differs from the file name", dir, e.Name(), x.FullName)
		}
		f := Field{Name: x.FullName, Label: x.Label, Type: x.Type, Picklist: x.Values, ReferenceTo: x.ReferenceTo,
			ExternalID: x.ExternalID, Unique: x.Unique, Required: x.Required}
		for _, n := range []struct {
			s string
			p *int
		}{{x.Length, &f.Length}, {x.Precision, &f.Precision}, {x.Scale, &f.Scale}} {
			if n.s == "" {
				continue
			}
			if *n.p, err = strconv.Atoi(n.s); err != nil {
				return nil, fmt.Errorf("metadata: %s: %q is not a number", name, n.s)
			}
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
