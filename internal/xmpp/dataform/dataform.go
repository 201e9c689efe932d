// Package dataform is the small part of XEP-0004 data forms the app server
// reads and writes: a form is a list of fields, each with a var and values.
package dataform

import "encoding/xml"

// NS is the data forms namespace.
const NS = "jabber:x:data"

// Form is an <x xmlns='jabber:x:data'/> element.
type Form struct {
	XMLName xml.Name `xml:"jabber:x:data x"`
	Type    string   `xml:"type,attr,omitempty"`
	Fields  []Field  `xml:"field"`
}

// Field is one form field.
type Field struct {
	Var    string   `xml:"var,attr,omitempty"`
	Type   string   `xml:"type,attr,omitempty"`
	Values []string `xml:"value"`
}

// Value returns the first value of the field named v and whether the field
// is present at all.
func (f *Form) Value(v string) (string, bool) {
	if f == nil {
		return "", false
	}
	for _, fl := range f.Fields {
		if fl.Var == v {
			if len(fl.Values) == 0 {
				return "", true
			}
			return fl.Values[0], true
		}
	}
	return "", false
}

// Values returns all values of the field named v, nil when it has none or
// is absent.
func (f *Form) Values(v string) []string {
	if f == nil {
		return nil
	}
	for _, fl := range f.Fields {
		if fl.Var == v {
			return fl.Values
		}
	}
	return nil
}

// FormType returns the value of the hidden FORM_TYPE field, or "".
func (f *Form) FormType() string {
	v, _ := f.Value("FORM_TYPE")
	return v
}
