package sftest

import "strings"

type fieldDef struct {
	Name, Label, Type      string
	Length                 int
	Createable, Updateable bool
	Picklist               []string
	ReferenceTo            []string
	ExternalID             bool
}

type schema struct {
	Name   string
	Fields []fieldDef
}

func (s *schema) field(name string) *fieldDef {
	for i := range s.Fields {
		if strings.EqualFold(s.Fields[i].Name, name) {
			return &s.Fields[i]
		}
	}
	return nil
}

func rw(name, typ string, length int) fieldDef {
	return fieldDef{Name: name, Label: name, Type: typ, Length: length, Createable: true, Updateable: true}
}

func ro(name, typ string, length int) fieldDef {
	return fieldDef{Name: name, Label: name, Type: typ, Length: length}
}

func pick(name string, values ...string) fieldDef {
	f := rw(name, "picklist", 255)
	f.Picklist = values
	return f
}

func ref(name string, to ...string) fieldDef {
	f := rw(name, "reference", 18)
	f.ReferenceTo = to
	return f
}

// personFields are the fields Contact and Lead share.
func personFields() []fieldDef {
	return []fieldDef{
		ro("Id", "id", 18), rw("FirstName", "string", 40), rw("LastName", "string", 80), ro("Name", "string", 121),
		rw("Email", "email", 80), rw("EmailBouncedReason", "string", 255), rw("EmailBouncedDate", "datetime", 0),
		ro("IsEmailBounced", "boolean", 0),
	}
}

// schema returns the fields of obj (name matched without case), with the
// configured custom fields.
func (s *Server) schema(obj string) (*schema, bool) {
	var sch schema
	switch strings.ToLower(obj) {
	case "contact":
		sch = schema{Name: "Contact", Fields: personFields()}
	case "lead":
		sch = schema{Name: "Lead", Fields: append(personFields(), rw("Company", "string", 255))}
	case "case":
		sch = schema{Name: "Case", Fields: []fieldDef{
			ro("Id", "id", 18), ro("CaseNumber", "string", 30),
			rw("Subject", "string", 255), rw("Description", "textarea", 32000),
			pick("Priority", "High", "Medium", "Low"), pick("Origin", "Phone", "Email", "Web"),
			pick("Status", "New", "Working", "Escalated", "Closed"),
			ref("ContactId", "Contact"), rw("SuppliedEmail", "email", 80), rw("RecordTypeId", "reference", 18),
		}}
	case "task":
		sch = schema{Name: "Task", Fields: []fieldDef{
			ro("Id", "id", 18), rw("Subject", "combobox", 255), rw("Description", "textarea", 32000),
			pick("Status", "Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
			pick("Priority", "High", "Normal", "Low"), ref("WhoId", "Contact", "Lead"), ref("WhatId", "Case", "Latchkey_Reset__c"),
			rw("ActivityDate", "date", 0), pick("TaskSubtype", "Task", "Email", "Call"),
		}}
	case "user":
		sch = schema{Name: "User", Fields: []fieldDef{ro("Id", "id", 18), ro("Username", "string", 80), ro("Email", "email", 128)}}
	default:
		return customSchema(obj)
	}
	for obj, fields := range s.opts.CustomFields {
		if strings.EqualFold(obj, sch.Name) {
			for _, f := range fields {
				sch.Fields = append(sch.Fields, rw(f, "email", 80))
			}
		}
	}
	return &sch, true
}
