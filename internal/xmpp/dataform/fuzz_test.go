package dataform

import (
	"encoding/xml"
	"testing"
)

// FuzzForm decodes arbitrary data forms: reading fields never panics, the
// first value read is the field's first value, and what was read can be
// written again.
func FuzzForm(f *testing.F) {
	f.Add(`<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field></x>`)
	f.Add(`<x xmlns='jabber:x:data'><field var='token'/><field var='token'><value>a</value><value>b</value></field></x>`)
	f.Add(`<x xmlns='jabber:x:data'><field><value/></field></x>`)
	f.Add(`<x xmlns='urn:other'/>`)
	f.Fuzz(func(t *testing.T, in string) {
		var form Form
		if err := xml.Unmarshal([]byte(in), &form); err != nil {
			return
		}
		form.FormType()
		for _, fl := range form.Fields {
			v, ok := form.Value(fl.Var)
			if !ok {
				t.Fatalf("field %q listed but not found", fl.Var)
			}
			vs := form.Values(fl.Var)
			if len(vs) > 0 && v != vs[0] {
				t.Fatalf("Value(%q) = %q, Values = %q", fl.Var, v, vs)
			}
		}
		if _, err := xml.Marshal(&form); err != nil {
			t.Fatalf("re-encoding a decoded form: %v", err)
		}
	})
}
